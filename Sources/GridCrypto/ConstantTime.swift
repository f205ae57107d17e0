/// Equality of secrets in time that depends only on their lengths, not on where they differ.
public func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var d: UInt8 = 0
    for i in 0..<a.count { d |= a[i] ^ b[i] }
    return d == 0
}
