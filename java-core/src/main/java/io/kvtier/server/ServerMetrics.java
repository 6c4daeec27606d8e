package io.kvtier.server;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.kvtier.store.ErrorKind;
import io.kvtier.store.KvStore;
import io.kvtier.store.StoreStats;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Executors;

/**
 * A cache server's stats in Prometheus' text format on {@code http://127.0.0.1:port/metrics}
 * (loopback only: a scraper runs beside the server or reaches it through a sidecar). Every series
 * is named {@code kvtier_server_*}; tiers are labelled {@code tier="memory"} and {@code
 * tier="disk"}. Renders a fresh snapshot per scrape; nothing is kept between scrapes.
 */
final class ServerMetrics implements AutoCloseable {
  private final HttpServer http;
  private final CacheServer server;

  ServerMetrics(int port, CacheServer server) throws IOException {
    this.server = server;
    this.http =
        HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), 16);
    http.setExecutor(
        Executors.newSingleThreadExecutor(io.kvtier.DaemonThreads.named("kvtier-server-stats")));
    http.createContext("/metrics", this::serve);
    http.createContext("/", ServerMetrics::notFound);
    http.start();
  }

  int port() {
    return http.getAddress().getPort();
  }

  private void serve(HttpExchange exchange) throws IOException {
    try (exchange) {
      if (!"GET".equals(exchange.getRequestMethod())) {
        exchange.sendResponseHeaders(405, -1);
        return;
      }
      byte[] body = render().getBytes(StandardCharsets.UTF_8);
      exchange.getResponseHeaders().set("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
      exchange.sendResponseHeaders(200, body.length);
      try (OutputStream out = exchange.getResponseBody()) {
        out.write(body);
      }
    }
  }

  private static void notFound(HttpExchange exchange) throws IOException {
    try (exchange) {
      exchange.sendResponseHeaders(404, -1);
    }
  }

  /** The text of one scrape. */
  String render() {
    ServerCounters c = server.counters();
    StringBuilder out = new StringBuilder(4096);
    Writer w = new Writer(out);
    w.series("connections_total", "counter", "Connections accepted.");
    w.sample("connections_total", "", c.connections.sum());
    w.series("connections", "gauge", "Connections open now.");
    w.sample("connections", "", c.open.sum());
    w.series("auth_failures_total", "counter", "Handshakes refused for a wrong shared secret.");
    w.sample("auth_failures_total", "", c.authFailures.sum());
    w.series(
        "connection_errors_total",
        "counter",
        "Connections closed on a failure (TLS handshake, reset).");
    w.sample("connection_errors_total", "", c.connectionErrors.sum());
    w.series(
        "protocol_errors_total",
        "counter",
        "Frames refused as malformed or too large, and clients that did not begin with a valid"
            + " HELLO (each gets an ERROR and is disconnected).");
    w.sample("protocol_errors_total", "", c.protocolErrors.sum());
    w.series(
        "requests_total",
        "counter",
        "Requests by operation (a GET or EXISTS of many keys is one).");
    w.sample("requests_total", "op=\"get\"", c.gets.sum());
    w.sample("requests_total", "op=\"exists\"", c.exists.sum());
    w.sample(
        "requests_total",
        "op=\"put\"",
        c.putsStored.sum() + c.putsDuplicate.sum() + c.putsDropped.sum());
    w.series(
        "rejected_requests_total",
        "counter",
        "GETs and EXISTSes answered as misses because every worker was busy.");
    w.sample("rejected_requests_total", "", server.rejectedRequests());
    w.series("get_keys_total", "counter", "Keys asked for by GETs, by result.");
    w.sample("get_keys_total", "result=\"hit\"", c.getHits.sum());
    w.sample("get_keys_total", "result=\"miss\"", c.getMisses.sum());
    w.series("puts_total", "counter", "Values put, by what the server answered.");
    w.sample("puts_total", "result=\"stored\"", c.putsStored.sum());
    w.sample("puts_total", "result=\"duplicate\"", c.putsDuplicate.sum());
    w.sample("puts_total", "result=\"dropped\"", c.putsDropped.sum());
    w.series("received_bytes_total", "counter", "Value bytes stored from PUTs.");
    w.sample("received_bytes_total", "", c.bytesReceived.sum());
    w.series("sent_bytes_total", "counter", "Value bytes sent in answer to GETs.");
    w.sample("sent_bytes_total", "", c.bytesSent.sum());

    Map<String, StoreStats> tiers = new java.util.LinkedHashMap<>();
    tiers.put("memory", server.store().cpu().stats());
    for (KvStore lower : server.store().lowerTiers()) {
      tiers.put("disk", lower.stats());
    }
    CacheServer.Settings s = server.settings();
    w.series("capacity_bytes", "gauge", "Bytes each tier may hold.");
    w.sample("capacity_bytes", "tier=\"memory\"", s.memoryBytes());
    if (tiers.containsKey("disk")) {
      w.sample("capacity_bytes", "tier=\"disk\"", s.diskBytes());
    }
    w.series("stored_bytes", "gauge", "Bytes each tier holds now.");
    tiers.forEach((t, st) -> w.sample("stored_bytes", "tier=\"" + t + "\"", st.bytes()));
    w.series("chunks", "gauge", "Values each tier holds now.");
    tiers.forEach((t, st) -> w.sample("chunks", "tier=\"" + t + "\"", st.entries()));
    w.series("evictions_total", "counter", "Values evicted to make room.");
    tiers.forEach((t, st) -> w.sample("evictions_total", "tier=\"" + t + "\"", st.evictions()));
    w.series(
        "dropped_puts_total", "counter", "Values a tier refused for want of room or queue space.");
    tiers.forEach(
        (t, st) -> w.sample("dropped_puts_total", "tier=\"" + t + "\"", st.droppedPuts()));
    w.series("errors_total", "counter", "Failures by tier and kind.");
    tiers.forEach(
        (t, st) -> {
          for (Map.Entry<ErrorKind, Long> e : st.errors().entrySet()) {
            w.sample(
                "errors_total",
                "tier=\"" + t + "\",kind=\"" + e.getKey().name().toLowerCase(Locale.ROOT) + "\"",
                e.getValue());
          }
        });
    return out.toString();
  }

  /** Appends series in the exposition format. */
  private record Writer(StringBuilder out) {
    void series(String name, String type, String help) {
      out.append("# HELP kvtier_server_").append(name).append(' ').append(help).append('\n');
      out.append("# TYPE kvtier_server_").append(name).append(' ').append(type).append('\n');
    }

    void sample(String name, String labels, long value) {
      out.append("kvtier_server_").append(name);
      if (!labels.isEmpty()) {
        out.append('{').append(labels).append('}');
      }
      out.append(' ').append(value).append('\n');
    }
  }

  @Override
  public void close() {
    http.stop(0);
    ((java.util.concurrent.ExecutorService) http.getExecutor()).shutdownNow();
  }
}
