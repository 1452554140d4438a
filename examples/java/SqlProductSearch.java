import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Option A, step 2: the search in ONE SQL call, through the function that the
 * deployment installs beside the table:
 *
 * <pre>
 * product_embeddings_search(query_embedding vector, query_terms text[], k integer,
 *                           filters jsonb DEFAULT '{}', search_mode text DEFAULT 'hybrid',
 *                           options jsonb DEFAULT NULL)
 *   RETURNS TABLE(product_id text, score double precision, product jsonb,
 *                 dense_rank bigint, dense_score double precision,
 *                 lexical_rank bigint, lexical_score double precision)
 * </pre>
 *
 * <p>With {@code options} NULL it fuses the dense and BM25 lanes exactly as the
 * deployed version records, so it returns what {@code POST /search} with
 * {@code "rerank": false} returns: the same products in the same order with
 * the same scores. Only the reranker (a model) stays in the service.
 *
 * <p>The JDBC driver needs no pgvector support: the vector goes as its text
 * form and PostgreSQL casts it ({@code ?::vector}).
 */
final class SqlProductSearch {

    private static final String SEARCH_SQL =
            "SELECT product_id, score, product, dense_score, lexical_score "
                    + "FROM product_embeddings_search(?::vector, ?, ?, ?::jsonb)";

    private SqlProductSearch() {}

    /**
     * The k best products for an embedded query, best first.
     *
     * @param connection e.g. from the application's pool (a Spring
     *     {@code DataSource}); not closed here
     * @param filtersJson e.g. {@code {"category": ["kitchen"]}}, or {@code {}}
     */
    static List<SearchServiceClient.Hit> search(
            Connection connection,
            SearchServiceClient.QueryEmbedding query,
            int k,
            String filtersJson)
            throws SQLException {
        try (PreparedStatement statement = connection.prepareStatement(SEARCH_SQL)) {
            statement.setString(1, vectorLiteral(query.vector()));
            statement.setArray(2, connection.createArrayOf("text", query.terms().toArray()));
            statement.setInt(3, k);
            statement.setString(4, filtersJson);

            List<SearchServiceClient.Hit> hits = new ArrayList<>();
            try (ResultSet rows = statement.executeQuery()) {
                while (rows.next()) {
                    // product: the display fields as JSON, e.g.
                    // {"title": ..., "brand": ..., "category": ..., "price": ...}
                    Map<?, ?> product = (Map<?, ?>) Json.parse(rows.getString("product"));
                    hits.add(new SearchServiceClient.Hit(
                            rows.getString("product_id"),
                            rows.getDouble("score"),
                            (String) product.get("title"),
                            // NULL where a lane did not find the product.
                            rows.getObject("dense_score", Double.class),
                            rows.getObject("lexical_score", Double.class)));
                }
            }
            return hits;
        }
    }

    /** pgvector's text form of a vector: {@code [0.1,-0.2,...]}. */
    static String vectorLiteral(double[] vector) {
        StringBuilder out = new StringBuilder(vector.length * 12).append('[');
        for (int i = 0; i < vector.length; i++) {
            if (i > 0) {
                out.append(',');
            }
            // Double.toString round-trips: the vector the service encoded
            // arrives unchanged (1.5E-4 is valid input for pgvector too).
            out.append(vector[i]);
        }
        return out.append(']').toString();
    }
}
