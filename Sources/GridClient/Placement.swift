import GridSystem
/// Share placement by servers-of-happiness.
///
/// "Happiness" is the size of a maximum matching between servers and the shares they
/// hold: the number of distinct servers such that each can be credited with a different
/// share. When it is at least `happy` (and `happy` >= k), any k of those servers hold k
/// distinct shares, so the file survives the loss of all the others.
public enum Placement {
    /// The size of a maximum server-share matching for `holdings` (server → shares).
    public static func happiness<S: Hashable>(_ holdings: [S: Set<Int>]) -> Int {
        var matchOfShare: [Int: S] = [:]
        var count = 0
        for server in holdings.keys {
            var seen = Set<Int>()
            if augment(server, holdings, &matchOfShare, &seen) { count += 1 }
        }
        return count
    }

    /// A maximum server-share matching for `holdings`: share → the server credited with it.
    public static func matching<S: Hashable>(_ holdings: [S: Set<Int>]) -> [Int: S] {
        var matchOfShare: [Int: S] = [:]
        for server in holdings.keys {
            var seen = Set<Int>()
            _ = augment(server, holdings, &matchOfShare, &seen)
        }
        return matchOfShare
    }

    /// Kuhn's augmenting path from `server`: true when it (re)arranged the matching to give
    /// `server` a share.
    static func augment<S: Hashable>(_ server: S, _ edges: [S: Set<Int>], _ matchOfShare: inout [Int: S], _ seen: inout Set<Int>) -> Bool {
        let mine = (edges[server] ?? []).sorted()
        // A free share first (lowest number): placements stay in permuted order.
        if let free = mine.first(where: { matchOfShare[$0] == nil && !seen.contains($0) }) {
            seen.insert(free)
            matchOfShare[free] = server
            return true
        }
        for share in mine where !seen.contains(share) {
            seen.insert(share)
            if let other = matchOfShare[share] {
                if augment(other, edges, &matchOfShare, &seen) {
                    matchOfShare[share] = server
                    return true
                }
            } else {
                matchOfShare[share] = server
                return true
            }
        }
        return false
    }

    /// Decides where shares 0..<total go.
    ///
    /// - `servers`: candidates in permuted order.
    /// - `existing`: shares each server already holds (or has already accepted).
    /// - `writable`: servers that may be asked to take more shares.
    ///
    /// Returns the new shares to ask of each writable server. Shares already held somewhere
    /// are not placed again. First the matching is grown as far as it goes (existing shares
    /// first, then one new share per writable server, in permuted order); the shares left
    /// over go to the writable servers holding the fewest, earliest in permuted order first.
    public static func plan<S: Hashable>(servers: [S], existing: [S: Set<Int>], writable: Set<S>, total: Int) -> [S: [Int]] {
        // Matching with existing edges only, then with new edges from writable servers.
        var matchOfShare: [Int: S] = [:]
        var matched = Set<S>()
        for s in servers where !(existing[s] ?? []).isEmpty {
            var seen = Set<Int>()
            if augment(s, existing, &matchOfShare, &seen) { matched.insert(s) }
        }
        var edges = existing
        let all = Set(0..<total)
        for s in servers where writable.contains(s) && !matched.contains(s) {
            edges[s] = all
            var seen = Set<Int>()
            if augment(s, edges, &matchOfShare, &seen) { matched.insert(s) }
        }
        var out: [S: [Int]] = [:]
        var load: [S: Int] = [:]
        for s in servers { load[s] = existing[s]?.count ?? 0 }
        let held = Set(existing.values.flatMap { $0 })
        for (share, s) in matchOfShare where !(existing[s] ?? []).contains(share) {
            out[s, default: []].append(share)
            load[s, default: 0] += 1
        }
        let placed = held.union(out.values.flatMap { $0 })
        let targets = servers.filter { writable.contains($0) }
        if !targets.isEmpty {
            for share in 0..<total where !placed.contains(share) {
                // Least loaded, earliest in permuted order.
                var best = targets[0]
                for t in targets where load[t]! < load[best]! { best = t }
                out[best, default: []].append(share)
                load[best]! += 1
            }
        }
        return out.mapValues { $0.sorted() }
    }
}
