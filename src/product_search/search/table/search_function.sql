-- The search of a deployed table as a SQL function, installed with each
-- version of the table (product_search.search.table.schema.install_function)
-- and called by SearchTable.search, so that /search and any SQL client (a Java
-- backend's JDBC query) run the same code:
--
--   SELECT * FROM <table>_search(query_embedding, query_terms, k
--                                [, filters [, search_mode [, options]]]);
--
-- query_embedding  the query's unit vector (POST /embed); NULL in lexical mode
-- query_terms      the query's analysed terms (POST /embed with
--                  "include": ["lexical"]); the database has no analyser
-- k                how many products, best first
-- filters          {{"category": ["a", "b"], "price": {{"min": 10, "max": 50}}}}:
--                  a list keeps the products whose column holds one of its
--                  values, {{min, max}} bounds a numeric column; applied inside
--                  both lanes, before fusion
-- search_mode      hybrid (the default), dense or lexical
-- options          fusion settings in place of the version's (NULL: the
--                  fusion the version was deployed with)
--
-- BM25 is not computed here: product_search.search.bm25.build_index weighs
-- every term of every product once, at save time, and the lexical table stores
-- those weights as a sparsevec; a product's score is their sum over the query's
-- terms, each times its count (bm25.score is the same sum in Python).
--
-- A dense lane with a filter that keeps at most filter_exact_rows products
-- ranks them exactly (no index); above that it walks the HNSW graph with
-- pgvector's iterative index scan, so that it still finds its candidates.
--
-- Rendered by psycopg's sql.SQL().format(): {{name}} is filled in at save time
-- and doubled braces are single ones.
CREATE FUNCTION {function}(
    query_embedding vector,
    query_terms text[],
    k integer,
    filters jsonb DEFAULT '{{}}'::jsonb,
    search_mode text DEFAULT 'hybrid',
    options jsonb DEFAULT NULL
) RETURNS TABLE (
    product_id text,
    score double precision,
    product jsonb,
    dense_rank bigint,
    dense_score double precision,
    lexical_rank bigint,
    lexical_score double precision
) LANGUAGE plpgsql VOLATILE AS $search$
DECLARE
    products constant text := {products};
    lexical_table constant text := {lexical};
    vocabulary constant text := {vocabulary};
    vocabulary_size constant integer := {vocabulary_size};
    dimension constant integer := {dimension};
    -- The query vector as the embedding column's type (vector or halfvec), so
    -- that the distance is the one the HNSW index orders by.
    query_vector constant text := format('CAST($1 AS %s)', {vector_type}::text);
    -- What a hit never shows: the vector and the model's name.
    hidden_columns constant text[] := {hidden};
    -- Each filterable column and the type its values are compared as.
    filter_columns constant jsonb := {filter_columns};
    settings constant jsonb := {options}::jsonb || coalesce(options, '{{}}'::jsonb);
    fusion constant text := settings->>'fusion';
    rrf_k constant integer := (settings->>'rrf_k')::integer;
    dense_weight constant double precision := (settings->>'dense_weight')::float8;
    lexical_weight constant double precision := (settings->>'lexical_weight')::float8;
    -- Only fusion needs candidates beyond the k shown.
    dense_depth integer := (settings->>'dense_depth')::integer;
    lexical_depth integer := (settings->>'lexical_depth')::integer;
    exact_rows constant bigint := (settings->>'filter_exact_rows')::bigint;
    predicate text := '';
    filter_column text;
    wanted jsonb;
    compared_as text;
    bound text;
    matched bigint;
    exact boolean := false;
    lanes text[] := ARRAY[]::text[];
    ranked text;
    -- Bounded BM25 (see the lexical lane); 0: exact.
    lexical_bound constant integer := coalesce((settings->>'lexical_bound')::integer, 0);
    -- How many of bounded BM25's candidates are scored exactly (10 x the
    -- lane's depth where that is larger); bench/results/scale_1000000.md
    -- measures how much of exact BM25's top 10 it keeps.
    lexical_rescored constant integer := 1000;
    -- The query's known terms (ids) and how often the query holds each.
    term_ids integer[];
    term_counts integer[];
    -- Bounded BM25's candidates, ranked by their impacts before exact scoring.
    postings text;
    -- The products table joined to a lexical query, for the filters' predicate.
    product_join text;
    -- Each lane's candidates with rank (1 = best, ties by product id), raw
    -- score and that score scaled to 0..1 over the lane's candidates.
    lane_columns constant text := $sql$product_id, score,
        row_number() OVER (ORDER BY score DESC, product_id) AS rank,
        coalesce((score - min(score) OVER ()) /
                 nullif(max(score) OVER () - min(score) OVER (), 0), 1.0) AS norm$sql$;
BEGIN
    IF search_mode IS NULL OR search_mode NOT IN ('hybrid', 'dense', 'lexical') THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'search_mode must be hybrid, dense or lexical, got %L.', search_mode);
    END IF;
    IF fusion IS NULL OR fusion NOT IN ('rrf', 'weighted') THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'options.fusion must be rrf or weighted, got %L.', fusion);
    END IF;
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'k must be a positive integer, got %s.', coalesce(k::text, 'NULL'));
    END IF;
    IF search_mode <> 'lexical' AND query_embedding IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            '%s search needs query_embedding.', search_mode);
    END IF;
    IF search_mode <> 'lexical' AND vector_dims(query_embedding) <> dimension THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
            'query_embedding has %s dimensions; the table holds %s.',
            vector_dims(query_embedding), dimension);
    END IF;
    IF jsonb_typeof(coalesce(filters, '{{}}'::jsonb)) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'filters must be a JSON object of column: condition.';
    END IF;

    FOR filter_column, wanted IN SELECT * FROM jsonb_each(coalesce(filters, '{{}}'::jsonb))
    LOOP
        compared_as := filter_columns->>filter_column;
        IF compared_as IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
                'Cannot filter on %s: the table has no such column. It has %s.',
                filter_column,
                (SELECT string_agg(c, ', ' ORDER BY c) FROM jsonb_object_keys(filter_columns) AS c));
        END IF;
        IF jsonb_typeof(wanted) = 'array' AND jsonb_array_length(wanted) > 0 THEN
            predicate := predicate || format(
                ' AND p.%I = ANY(%L::%s[])', filter_column,
                ARRAY(SELECT jsonb_array_elements_text(wanted)), compared_as);
        ELSIF jsonb_typeof(wanted) = 'object' AND compared_as NOT IN ('text', 'boolean')
              AND wanted <> '{{}}'::jsonb AND NOT EXISTS (
                  SELECT FROM jsonb_object_keys(wanted) AS b WHERE b NOT IN ('min', 'max')) THEN
            FOR bound IN SELECT b FROM jsonb_object_keys(wanted) AS b ORDER BY b DESC LOOP
                IF jsonb_typeof(wanted->bound) <> 'number' THEN
                    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
                        'filters.%s.%s must be a number, got %s.',
                        filter_column, bound, wanted->bound);
                END IF;
                predicate := predicate || format(
                    ' AND p.%I %s %L::%s', filter_column,
                    CASE bound WHEN 'min' THEN '>=' ELSE '<=' END,
                    wanted->>bound, compared_as);
            END LOOP;
        ELSE
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
                'filters.%s must be a non-empty list of values%s, got %s.',
                filter_column,
                CASE WHEN compared_as NOT IN ('text', 'boolean')
                     THEN ' or {{"min": ..., "max": ...}}' ELSE '' END,
                wanted);
        END IF;
    END LOOP;

    IF search_mode <> 'hybrid' THEN
        dense_depth := k;
        lexical_depth := k;
    ELSE
        dense_depth := greatest(dense_depth, k);
        lexical_depth := greatest(lexical_depth, k);
    END IF;

    IF search_mode <> 'lexical' THEN
        IF predicate <> '' THEN
            -- Count the matches only as far as the threshold (a few index pages).
            EXECUTE format(
                'SELECT count(*) FROM (SELECT FROM %s AS p WHERE true%s LIMIT %s) AS m',
                products, predicate, exact_rows + 1) INTO matched;
            exact := matched <= exact_rows;
            IF NOT exact THEN
                PERFORM set_config('hnsw.iterative_scan', 'strict_order', true);
            END IF;
        END IF;
        PERFORM set_config('hnsw.ef_search', least(greatest(
            (settings->>'ef_search')::integer, dense_depth), {max_ef_search})::text, true);
        -- Nearest vectors: through the HNSW index, or, for a selective
        -- filter, every matching product ranked exactly (ordering by the
        -- score rather than by the distance keeps the index out).
        lanes := lanes || format($sql$dense AS (SELECT %s FROM (
            SELECT p.product_id, 1 - (p.embedding <=> %s) AS score
            FROM %s AS p WHERE true%s ORDER BY %s LIMIT $4) AS d)$sql$,
            lane_columns, query_vector, products, predicate,
            CASE WHEN exact THEN 'score DESC, p.product_id'
                 ELSE 'p.embedding <=> ' || query_vector END);
    END IF;
    IF search_mode <> 'dense' THEN
        -- BM25: the query's known terms with their counts; candidates are the
        -- products holding any of them (GIN index, OR semantics); a score is
        -- the inner product of the product's stored BM25 weights with the
        -- counts (the sparsevec is 1-based, term ids 0-based).
        --
        -- Bounded BM25 (options.lexical_bound > 0): each query term brings in
        -- at most lexical_bound products, those of its highest weights that
        -- pass the filters, read in that order from the impacts table's
        -- (term_id, weight DESC, product_id) index alone, so that a common
        -- word does not bring in most of the catalog. The candidates are
        -- ranked by the sum of the weights read (times the term's count), and
        -- the best lexical_rescored of them are scored exactly with the stored
        -- sparsevec: a candidate's sum misses only the weights, each below its
        -- term's last one read, of the terms whose lists it is not in. Reading
        -- the index costs far less per candidate than scoring from the lexical
        -- table, which is what bounds the lane's time. A term held by at most
        -- lexical_bound products brings in all of them with every weight, so
        -- below the bound the lane is exact BM25. The term ids are written
        -- into the statement, so that the planner walks each term's entries
        -- in the index.
        product_join := CASE WHEN predicate <> ''
            THEN format(' JOIN %s AS p USING (product_id)', products) ELSE '' END;
        IF lexical_bound > 0 THEN
            EXECUTE format('SELECT array_agg(t.term_id ORDER BY t.term_id), '
                           'array_agg(q.n ORDER BY t.term_id) FROM (SELECT term, count(*) AS n '
                           'FROM unnest(CAST($1 AS text[])) AS term GROUP BY term) AS q '
                           'JOIN %s AS t USING (term)', vocabulary)
                INTO term_ids, term_counts USING query_terms;
            postings := coalesce((SELECT string_agg(format($top$(SELECT i.product_id,
                    i.weight::float8 * %s AS impact FROM %s AS i%s WHERE i.term_id = %s%s
                    ORDER BY i.weight DESC, i.product_id LIMIT %s)$top$,
                    c.n, {impacts}, product_join, c.term_id, predicate, lexical_bound),
                    ' UNION ALL ')
                FROM unnest(term_ids, term_counts) AS c(term_id, n)),
                'SELECT NULL::text AS product_id, 0::float8 AS impact WHERE false');
        END IF;
        lanes := lanes || format($sql$query_terms AS MATERIALIZED (
            SELECT t.term, t.term_id, count(*) AS n
            FROM unnest(CAST($2 AS text[])) AS q(term) JOIN %s AS t USING (term)
            GROUP BY t.term, t.term_id),
        lexical AS (SELECT %s FROM (
            SELECT l.product_id, -(l.bm25 <#> (SELECT CAST('{{' || string_agg(
                (term_id + 1) || ':' || n, ',' ORDER BY term_id) || '}}/%s' AS sparsevec)
                FROM query_terms)) AS score
            FROM %s AS l%s
            ORDER BY score DESC, l.product_id LIMIT $5) AS l)$sql$,
            vocabulary, lane_columns, greatest(vocabulary_size, 1), lexical_table,
            CASE WHEN lexical_bound > 0
                 THEN format($top$ JOIN (SELECT c.product_id FROM (%s) AS c
                    GROUP BY c.product_id ORDER BY sum(c.impact) DESC, c.product_id
                    LIMIT %s) AS top USING (product_id)$top$,
                    postings, greatest(lexical_rescored, 10 * lexical_depth))
                 ELSE product_join || ' WHERE l.terms && (SELECT array_agg(term) '
                      'FROM query_terms)' || predicate END);
    END IF;

    IF search_mode = 'hybrid' THEN
        ranked := format($sql$SELECT product_id, CAST(%s AS float8) AS score,
                d.rank AS dense_rank, d.score AS dense_score,
                l.rank AS lexical_rank, l.score AS lexical_score
            FROM dense AS d FULL JOIN lexical AS l USING (product_id)
            ORDER BY 2 DESC, product_id LIMIT $3$sql$,
            CASE fusion
                WHEN 'rrf' THEN '$7 * coalesce(1.0 / ($6 + d.rank), 0) + '
                                '$8 * coalesce(1.0 / ($6 + l.rank), 0)'
                ELSE '$7 * coalesce(d.norm, 0) + $8 * coalesce(l.norm, 0)' END);
    ELSIF search_mode = 'dense' THEN
        ranked := $sql$SELECT product_id, score, rank AS dense_rank, score AS dense_score,
                NULL::bigint AS lexical_rank, NULL::float8 AS lexical_score
            FROM dense ORDER BY rank LIMIT $3$sql$;
    ELSE
        ranked := $sql$SELECT product_id, score, NULL::bigint AS dense_rank,
                NULL::float8 AS dense_score, rank AS lexical_rank, score AS lexical_score
            FROM lexical ORDER BY rank LIMIT $3$sql$;
    END IF;

    -- Display columns only for the k products shown.
    RETURN QUERY EXECUTE format($sql$WITH %s, ranked AS (%s)
        SELECT r.product_id, r.score,
               to_jsonb(p) - %L::text[] - 'product_id',
               r.dense_rank, r.dense_score, r.lexical_rank, r.lexical_score
        FROM ranked AS r JOIN %s AS p USING (product_id)
        ORDER BY r.score DESC, r.product_id$sql$,
        array_to_string(lanes, ', '), ranked, hidden_columns, products)
    USING query_embedding, query_terms, k, dense_depth, lexical_depth,
          rrf_k, dense_weight, lexical_weight;
END
$search$
