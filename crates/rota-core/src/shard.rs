//! Task → shard hashing.

/// FNV-1a (64 bit) offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a (64 bit) prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over the bytes of `namespace/name`. Hand-written (not `std::hash`), so every node, platform and
/// version of Rota computes the same value.
pub(crate) fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

/// The shard of `namespace/name` among `shard_count` shards (a `shard_count` of 0 counts as 1).
pub(crate) fn shard_of(namespace: &str, name: &str, shard_count: u32) -> u32 {
    let h = fnv1a64(&[namespace.as_bytes(), b"/", name.as_bytes()]);
    (h % u64::from(shard_count.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        // Reference values of the FNV-1a 64 specification.
        assert_eq!(fnv1a64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&[b"foobar"]), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a64(&[b"foo", b"bar"]), fnv1a64(&[b"foobar"]));
    }

    #[test]
    fn shard_is_stable_and_in_range() {
        // Pinned values: changing them would move every stored task to another shard.
        assert_eq!(fnv1a64(&[b"billing/nightly-report"]), 13_717_137_554_773_062_463);
        assert_eq!(shard_of("billing", "nightly-report", 256), 63);
        for i in 0..1000 {
            let s = shard_of("ns", &format!("task-{i}"), 16);
            assert!(s < 16);
        }
        assert_eq!(shard_of("a", "b", 0), 0);
        assert_eq!(shard_of("a", "b", 1), 0);
    }
}
