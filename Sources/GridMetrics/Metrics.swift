import Synchronization

/// Counters, gauges and histograms of one process, rendered in Prometheus's text format
/// (version 0.0.4). Names follow Prometheus's conventions (`_total` for counters,
/// `_bytes`, `_seconds`); labels name a method, a status or a kind, never a file.
///
/// Updating a metric takes one short lock; gauges that are cheaper to read when scraped
/// than to keep current (disk space, lease counts) come from `collect` callbacks run at
/// scrape time.
public final class MetricsRegistry: Sendable {
    public enum Kind: String, Sendable { case counter, gauge, histogram }

    struct Family {
        var kind: Kind
        var help: String
        var buckets: [Double]
        /// Label text (`{a="b"}` or "") → value, or bucket counts then sum then count.
        var series: [String: [Double]] = [:]
        var order: [String] = []
    }

    /// One sample of a collected gauge or counter.
    public struct Sample: Sendable {
        public var name: String
        public var kind: Kind
        public var help: String
        public var labels: [(String, String)]
        public var value: Double
        public init(_ name: String, _ kind: Kind = .gauge, help: String, labels: [(String, String)] = [], value: Double) {
            self.name = name
            self.kind = kind
            self.help = help
            self.labels = labels
            self.value = value
        }
    }

    /// The families and the order they were first seen in, under one lock.
    let families = Mutex<(byName: [String: Family], order: [String])>(([:], []))
    let collectors = Mutex<[@Sendable () -> [Sample]]>([])

    public init() {}

    /// The default latency buckets (seconds): 1 ms to 60 s.
    public static let latencyBuckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

    /// Declares a metric (idempotent). Declared metrics appear in the output at 0.
    public func declare(_ name: String, _ kind: Kind, help: String, buckets: [Double] = latencyBuckets) {
        families.withLock { f in
            guard f.byName[name] == nil else { return }
            f.byName[name] = Family(kind: kind, help: help, buckets: kind == .histogram ? buckets : [])
            f.order.append(name)
        }
    }

    /// Adds to a counter (declared on first use).
    public func add(_ name: String, _ value: Double = 1, labels: [(String, String)] = [], help: String = "") {
        update(name, .counter, help: help, labels: labels) { v, _ in v[0] += value }
    }

    /// Sets a gauge.
    public func set(_ name: String, _ value: Double, labels: [(String, String)] = [], help: String = "") {
        update(name, .gauge, help: help, labels: labels) { v, _ in v[0] = value }
    }

    /// Records one observation in a histogram.
    public func observe(_ name: String, _ value: Double, labels: [(String, String)] = [], help: String = "",
                        buckets: [Double] = latencyBuckets) {
        update(name, .histogram, help: help, labels: labels, buckets: buckets) { v, bounds in
            let b = v.count - 2
            for i in 0..<b where value <= bounds[i] { v[i] += 1 }
            v[b] += value
            v[b + 1] += 1
        }
    }

    private func update(_ name: String, _ kind: Kind, help: String, labels: [(String, String)], buckets: [Double] = [],
                        _ change: (inout [Double], [Double]) -> Void) {
        let key = Self.labelText(labels)
        families.withLock { f in
            if f.byName[name] == nil {
                f.byName[name] = Family(kind: kind, help: help, buckets: kind == .histogram ? buckets : [])
                f.order.append(name)
            }
            if f.byName[name]!.series[key] == nil {
                f.byName[name]!.series[key] = Array(repeating: 0, count: kind == .histogram ? f.byName[name]!.buckets.count + 2 : 1)
                f.byName[name]!.order.append(key)
            }
            let bounds = f.byName[name]!.buckets
            change(&f.byName[name]!.series[key]!, bounds)
        }
    }

    /// Adds a callback run at each scrape whose samples are rendered after the stored ones.
    public func collect(_ body: @escaping @Sendable () -> [Sample]) {
        collectors.withLock { $0.append(body) }
    }

    /// A counter's or gauge's current value (tests, the status page).
    public func value(_ name: String, labels: [(String, String)] = []) -> Double? {
        families.withLock { $0.byName[name]?.series[Self.labelText(labels)]?.first }
    }

    /// The Prometheus text exposition of every metric.
    public func render() -> String {
        var out = ""
        let (snapshot, names) = families.withLock { ($0.byName, $0.order) }
        for name in names {
            guard let f = snapshot[name] else { continue }
            out += "# HELP \(name) \(Self.escapeHelp(f.help))\n# TYPE \(name) \(f.kind.rawValue)\n"
            for key in f.order {
                let v = f.series[key]!
                switch f.kind {
                case .counter, .gauge:
                    out += "\(name)\(key) \(Self.number(v[0]))\n"
                case .histogram:
                    for (i, le) in f.buckets.enumerated() {
                        out += "\(name)_bucket\(Self.adding("le", Self.number(le), to: key)) \(Self.number(v[i]))\n"
                    }
                    let n = v[v.count - 1]
                    out += "\(name)_bucket\(Self.adding("le", "+Inf", to: key)) \(Self.number(n))\n"
                    out += "\(name)_sum\(key) \(Self.number(v[v.count - 2]))\n"
                    out += "\(name)_count\(key) \(Self.number(n))\n"
                }
            }
        }
        var collected: [String: (Sample, [String])] = [:]
        var collectedOrder: [String] = []
        for c in collectors.withLock({ $0 }) {
            for s in c() {
                if collected[s.name] == nil { collected[s.name] = (s, []); collectedOrder.append(s.name) }
                collected[s.name]!.1.append("\(s.name)\(Self.labelText(s.labels)) \(Self.number(s.value))")
            }
        }
        for name in collectedOrder where snapshot[name] == nil {
            let (s, lines) = collected[name]!
            out += "# HELP \(name) \(Self.escapeHelp(s.help))\n# TYPE \(name) \(s.kind.rawValue)\n"
            out += lines.joined(separator: "\n") + "\n"
        }
        return out
    }

    static func labelText(_ labels: [(String, String)]) -> String {
        guard !labels.isEmpty else { return "" }
        return "{" + labels.map { "\($0.0)=\"\(escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
    }

    static func adding(_ name: String, _ value: String, to key: String) -> String {
        key.isEmpty ? "{\(name)=\"\(value)\"}" : String(key.dropLast()) + ",\(name)=\"\(value)\"}"
    }

    /// The exposition format's escapes: backslash and newline, and in label values the quote.
    static func escape(_ s: String, quotes: Bool) -> String {
        var o = ""
        for c in s {
            switch c {
            case "\\": o += "\\\\"
            case "\"" where quotes: o += "\\\""
            case "\n": o += "\\n"
            default: o.append(c)
            }
        }
        return o
    }

    static func escapeLabel(_ s: String) -> String { escape(s, quotes: true) }
    static func escapeHelp(_ s: String) -> String { escape(s, quotes: false) }

    /// A number as Prometheus reads it: integers without a fraction.
    public static func number(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }
}
