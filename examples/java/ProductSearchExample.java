/*
 * How a Java backend searches the product catalog, both ways:
 *
 *   Option A: POST /embed for the query's vector and analysed terms, then ONE
 *             SQL call, product_embeddings_search(...), on your own database
 *             connection (filters, joins and transactions stay in your SQL).
 *   Option B: POST /search, and the service does everything, reranking
 *             included.
 *
 * Plain Java 17: the JDK's HttpClient, JDBC with the PostgreSQL driver, and a
 * small JSON helper (Json.java). Compile and run from the project root:
 *
 *   javac -d build/java examples/java/*.java
 *   java -cp /usr/share/java/postgresql.jar:build/java ProductSearchExample \
 *       --service http://127.0.0.1:8000 \
 *       --jdbc 'jdbc:postgresql://127.0.0.1:5432/postgres?user=postgres' \
 *       --k 5 --filters '{"category": ["kitchen"]}' "cast iron pan" "dog toy"
 *
 * The API key comes from --api-key or the SEARCH_API_KEY variable (the
 * service's own setting). Each query prints two JSON lines on stdout, one per
 * option:
 *
 *   {"option":"A","query":"cast iron pan","hits":[{"product_id":"P0012","score":0.35,
 *    "title":"...","dense_score":0.61,"lexical_score":4.2}, ...]}
 *
 * Errors go to stderr, with exit status 1 (2 for a bad command line).
 */

import java.io.IOException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

public final class ProductSearchExample {

    private static final String USAGE = String.join("\n",
            "usage: java -cp postgresql.jar:CLASSES ProductSearchExample",
            "           --service URL --jdbc JDBC_URL [--api-key KEY] [--k N]",
            "           [--filters JSON] QUERY...",
            "  --service  the search service, e.g. http://127.0.0.1:8000",
            "  --jdbc     its database, e.g.",
            "             'jdbc:postgresql://127.0.0.1:5432/postgres?user=postgres'",
            "  --api-key  the service's key (default: the SEARCH_API_KEY variable)",
            "  --k        products per query (default: 5)",
            "  --filters  e.g. '{\"category\": [\"kitchen\"], \"brand\": [\"Lodge\"],"
                    + " \"price\": {\"min\": 10, \"max\": 50}}'");

    /** The command line, checked. */
    record Options(
            String serviceUrl,
            String jdbcUrl,
            String apiKey,
            int k,
            Map<String, Object> filters,
            List<String> queries) {

        static Options parse(String[] args) {
            String serviceUrl = null;
            String jdbcUrl = null;
            String apiKey = System.getenv("SEARCH_API_KEY");
            int k = 5;
            Map<String, Object> filters = Map.of();
            List<String> queries = new ArrayList<>();
            for (int i = 0; i < args.length; i++) {
                String arg = args[i];
                if (!arg.startsWith("--")) {
                    queries.add(arg);
                    continue;
                }
                if (i + 1 == args.length) {
                    throw new IllegalArgumentException(arg + " needs a value");
                }
                String value = args[++i];
                switch (arg) {
                    case "--service" -> serviceUrl = value;
                    case "--jdbc" -> jdbcUrl = value;
                    case "--api-key" -> apiKey = value;
                    case "--k" -> k = parseK(value);
                    case "--filters" -> filters = parseFilters(value);
                    default -> throw new IllegalArgumentException("unknown option " + arg);
                }
            }
            if (serviceUrl == null || jdbcUrl == null) {
                throw new IllegalArgumentException("--service and --jdbc are required");
            }
            if (queries.isEmpty()) {
                throw new IllegalArgumentException("give at least one query");
            }
            return new Options(serviceUrl, jdbcUrl, apiKey, k, filters, queries);
        }

        private static int parseK(String value) {
            try {
                int k = Integer.parseInt(value);
                if (k >= 1) {
                    return k;
                }
            } catch (NumberFormatException e) {
                // reported below
            }
            throw new IllegalArgumentException("--k must be a positive integer, got " + value);
        }

        private static Map<String, Object> parseFilters(String value) {
            Object filters = Json.parse(value);
            if (!(filters instanceof Map<?, ?> object)) {
                throw new IllegalArgumentException("--filters must be a JSON object");
            }
            Map<String, Object> checked = new LinkedHashMap<>();
            object.forEach((key, filter) -> checked.put((String) key, filter));
            return checked;
        }
    }

    public static void main(String[] args) {
        if (args.length == 1 && (args[0].equals("--help") || args[0].equals("-h"))) {
            System.err.println(USAGE);
            return;
        }
        Options options;
        try {
            options = Options.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("error: " + e.getMessage());
            System.err.println(USAGE);
            System.exit(2);
            return;
        }
        try {
            run(options);
        } catch (IOException | SQLException e) {
            System.err.println("error: " + e.getMessage());
            System.exit(1);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            System.err.println("error: interrupted");
            System.exit(1);
        }
    }

    static void run(Options options) throws IOException, SQLException, InterruptedException {
        SearchServiceClient service =
                new SearchServiceClient(options.serviceUrl(), options.apiKey());
        // The SQL function takes the filters as JSON text, /search as an object.
        String filtersJson = Json.write(options.filters());

        // A backend would borrow connections from its pool (a Spring DataSource);
        // the example opens one for all its queries.
        try (Connection database = openDatabase(options.jdbcUrl())) {
            for (String query : options.queries()) {
                // Option A: the service embeds and analyses the query; the
                // database searches, in one statement.
                SearchServiceClient.QueryEmbedding embedded;
                List<SearchServiceClient.Hit> hits;
                try {
                    embedded = service.embedQuery(query);
                    hits = SqlProductSearch.search(database, embedded, options.k(), filtersJson);
                } catch (IOException | SQLException e) {
                    throw failed("A", query, e);
                }
                print("A", query, hits);

                // Option B: one HTTP call, reranked results.
                try {
                    hits = service.search(query, options.k(), options.filters());
                } catch (IOException e) {
                    throw failed("B", query, e);
                }
                print("B", query, hits);
            }
        }
    }

    private static IOException failed(String option, String query, Exception cause) {
        return new IOException(
                "Option " + option + " failed for \"" + query + "\": " + cause.getMessage(), cause);
    }

    private static Connection openDatabase(String jdbcUrl) throws SQLException {
        try {
            return DriverManager.getConnection(jdbcUrl);
        } catch (SQLException e) {
            String hint = e.getMessage().startsWith("No suitable driver")
                    ? " (put the PostgreSQL JDBC driver, postgresql.jar, on the class path)"
                    : "";
            // Never print a password given in the URL.
            String url = jdbcUrl.replaceAll("password=[^&]*", "password=***");
            throw new SQLException("Could not connect to " + url + hint + ": " + e.getMessage(), e);
        }
    }

    /** One JSON line: {"option", "query", "hits": [{"product_id", "score", ...}, ...]}. */
    private static void print(String option, String query, List<SearchServiceClient.Hit> hits) {
        List<Object> items = new ArrayList<>();
        for (SearchServiceClient.Hit hit : hits) {
            Map<String, Object> item = new LinkedHashMap<>();
            item.put("product_id", hit.productId());
            item.put("score", hit.score());
            item.put("title", hit.title());
            item.put("dense_score", hit.denseScore());
            item.put("lexical_score", hit.lexicalScore());
            items.add(item);
        }
        Map<String, Object> line = new LinkedHashMap<>();
        line.put("option", option);
        line.put("query", query);
        line.put("hits", items);
        System.out.println(Json.write(line));
    }
}
