import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The search service's HTTP API, with the JDK's own {@link HttpClient}.
 *
 * <ul>
 *   <li>{@link #search}: {@code POST /search}, the service does everything
 *       (Option B).
 *   <li>{@link #embedQuery}: {@code POST /embed} with {@code "include":
 *       ["lexical"]}, the query's vector and analysed terms, for the SQL
 *       function (Option A).
 * </ul>
 *
 * <p>When the service runs with {@code SEARCH_API_KEY} set, every call but
 * {@code GET /health} needs {@code Authorization: Bearer <key>}.
 */
final class SearchServiceClient {

    /**
     * A product found, best first: its id, its score, its title, and its
     * score in each lane (cosine similarity, BM25), null where that lane did
     * not find it.
     */
    record Hit(
            String productId, double score, String title, Double denseScore, Double lexicalScore) {}

    /** A query as /embed sees it: its unit vector and its analysed (BM25) terms. */
    record QueryEmbedding(double[] vector, List<String> terms) {}

    private static final Duration REQUEST_TIMEOUT = Duration.ofSeconds(30);

    private final HttpClient http;
    private final URI service;
    private final String apiKey;

    /**
     * @param serviceUrl e.g. {@code http://127.0.0.1:8000}
     * @param apiKey the service's key, or null when it has none
     */
    SearchServiceClient(String serviceUrl, String apiKey) {
        // The stock client with its defaults (it offers HTTP/2, and speaks
        // HTTP/1.1 when the server declines). Build one per application: it is
        // thread-safe and keeps connections open between requests.
        this.http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        this.service = URI.create(serviceUrl.endsWith("/") ? serviceUrl : serviceUrl + "/");
        this.apiKey = apiKey;
    }

    /**
     * Option B: the k best products for the query, hybrid retrieval reranked
     * by the deployed reranker (the service's defaults).
     *
     * @param filters e.g. {@code {"category": ["kitchen"], "price": {"max": 50}}};
     *     empty for none
     */
    List<Hit> search(String query, int k, Map<String, Object> filters)
            throws IOException, InterruptedException {
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("query", query);
        body.put("k", k);
        // "mode": "hybrid" and "rerank": true are the defaults.
        if (!filters.isEmpty()) {
            body.put("filters", filters);
        }
        Map<?, ?> answer = post("search", body);

        // Each result also carries each lane's rank, the reranker's score
        // (rerank_score) and the other display fields (brand, category, price).
        List<Hit> hits = new ArrayList<>();
        for (Object item : list(answer, "results")) {
            Map<?, ?> result = (Map<?, ?>) item;
            hits.add(new Hit(
                    (String) result.get("product_id"),
                    (Double) result.get("score"),
                    (String) result.get("title"),
                    (Double) result.get("dense_score"),
                    (Double) result.get("lexical_score")));
        }
        return hits;
    }

    /** Option A, step 1: the query's vector and its analysed terms. */
    QueryEmbedding embedQuery(String query) throws IOException, InterruptedException {
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("texts", List.of(query));
        // Ask for the terms too: the SQL function's BM25 lane needs the query
        // analysed exactly as the products were (same tokenizer, stemmer and
        // stop words), and only the service knows how.
        body.put("include", List.of("lexical"));
        Map<?, ?> answer = post("embed", body);

        List<?> vector = (List<?>) list(answer, "embeddings").get(0);
        double[] values = new double[vector.size()];
        for (int i = 0; i < values.length; i++) {
            values[i] = (Double) vector.get(i);
        }
        List<String> terms = new ArrayList<>();
        for (Object term : (List<?>) list(answer, "terms").get(0)) {
            terms.add((String) term);
        }
        return new QueryEmbedding(values, terms);
    }

    /** POSTs a JSON body; the JSON object answered, or an IOException with the reason. */
    private Map<?, ?> post(String path, Map<String, Object> body)
            throws IOException, InterruptedException {
        HttpRequest.Builder request = HttpRequest.newBuilder(service.resolve(path))
                .timeout(REQUEST_TIMEOUT)
                .header("Content-Type", "application/json")
                .header("Accept", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(Json.write(body)));
        if (apiKey != null && !apiKey.isEmpty()) {
            request.header("Authorization", "Bearer " + apiKey);
        }
        HttpResponse<String> response =
                http.send(request.build(), HttpResponse.BodyHandlers.ofString());

        if (response.statusCode() != 200) {
            // FastAPI explains a refusal in "detail": a message (401, 503) or
            // a list of the invalid fields (422).
            throw new IOException("POST /" + path + " answered HTTP "
                    + response.statusCode() + ": " + response.body());
        }
        return (Map<?, ?>) Json.parse(response.body());
    }

    private static List<?> list(Map<?, ?> object, String key) throws IOException {
        if (!(object.get(key) instanceof List<?> value)) {
            throw new IOException("The service's answer has no list '" + key + "'");
        }
        return value;
    }
}
