import Foundation
import GridSystem
import GridMetrics

/// Serves `GET /metrics` (Prometheus's text format, version 0.0.4) from a registry, with
/// the process's build info, start time and uptime; any other path is 404.
public struct MetricsEndpoint: HTTPHandler {
    public let registry: MetricsRegistry

    public init(registry: MetricsRegistry, version: String, kind: String) {
        self.registry = registry
        let started = wallClock()
        registry.set("grid_build_info", 1, labels: [("version", version), ("kind", kind)],
                     help: "Always 1; the labels say which grid version and kind of node this is.")
        registry.collect {
            let now = wallClock()
            return [MetricsRegistry.Sample("grid_process_start_time_seconds", help: "When this process started (Unix time).", value: started),
                    MetricsRegistry.Sample("grid_uptime_seconds", help: "Seconds since this process started.", value: now - started)]
        }
    }

    public func handle(_ request: HTTPRequest, _ response: HTTPResponse) async {
        guard request.head.rawPath == "/metrics" else {
            await response.send(status: 404, text: "only /metrics is served here")
            return
        }
        guard request.method == "GET" || request.method == "HEAD" else {
            await response.send(status: 405, text: "GET /metrics")
            return
        }
        await response.send(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: Array(registry.render().utf8))
    }
}
