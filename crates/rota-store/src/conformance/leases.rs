//! Shard leases: acquisition, expiry, epochs, renew, release, listing.

use super::support::*;
use crate::{Lease, Store, StoreError};

/// The first acquisition of a shard yields epoch >= 1 and expiry `now + ttl`.
pub async fn lease_first_acquire<S: Store>(store: S) {
    let l =
        store.acquire_lease(3, "node-a", std::time::Duration::from_millis(15_250), t0()).await.must("acquire_lease");
    let l = l.expect("a free shard is acquired");
    assert_eq!(l.shard, 3);
    assert_eq!(l.owner, "node-a");
    assert!(l.epoch >= 1, "the first epoch is at least 1, got {}", l.epoch);
    assert_eq!(l.expires_at, tms(15_250), "expires_at = now + ttl");
    assert_eq!(store.list_leases().await.must("list_leases"), vec![l.clone()], "list_leases shows the lease");
    assert_eq!(l.fence(), crate::Fence { shard: 3, epoch: l.epoch });
}

/// Another owner gets `None` while the lease is live; at or after expiry it takes over with a higher epoch.
pub async fn lease_held_blocks_others_until_expiry<S: Store>(store: S) {
    let a = acquire(&store, 1, "a", secs(10), t0()).await;
    for at in [0, 5] {
        assert_eq!(
            store.acquire_lease(1, "b", secs(10), ts(at)).await.must("acquire by b"),
            None,
            "another owner cannot take a live lease (at +{at}s)"
        );
    }
    assert_eq!(
        store.acquire_lease(1, "b", secs(10), tms(9_999)).await.must("acquire by b 1 ms before expiry"),
        None,
        "1 ms before expiry the lease is still live"
    );
    assert_eq!(store.list_leases().await.must("list_leases"), vec![a.clone()], "failed attempts change nothing");
    let b = store.acquire_lease(1, "b", secs(10), ts(10)).await.must("acquire by b at expiry");
    let b = b.expect("a lease whose expires_at <= now is free");
    assert_eq!(b.owner, "b");
    assert!(b.epoch > a.epoch, "a new holder gets a higher epoch ({} then {})", a.epoch, b.epoch);
    assert_eq!(b.expires_at, ts(20));
    assert_eq!(
        store.acquire_lease(1, "a", secs(10), ts(11)).await.must("a tries to come back"),
        None,
        "b holds it now"
    );
    let c = acquire(&store, 1, "c", secs(10), ts(40)).await;
    assert!(c.epoch > b.epoch, "each change of holder increments the epoch");
}

/// Re-acquiring one's own live lease keeps the epoch and extends the expiry.
pub async fn lease_reacquire_keeps_epoch<S: Store>(store: S) {
    let a = acquire(&store, 2, "a", secs(10), t0()).await;
    let again = acquire(&store, 2, "a", secs(30), ts(5)).await;
    assert_eq!(again.epoch, a.epoch, "re-acquiring one's own live lease keeps the epoch");
    assert_eq!(again.owner, "a");
    assert_eq!(again.expires_at, ts(35), "re-acquiring extends the expiry");
    assert_eq!(store.acquire_lease(2, "b", secs(10), ts(20)).await.must("acquire by b"), None, "still held by a");
}

/// Renewing extends a lease held at the same epoch (even expired, if nobody took it); otherwise `Fenced`.
pub async fn lease_renew<S: Store>(store: S) {
    let a = acquire(&store, 4, "a", secs(10), t0()).await;
    let r = store.renew_lease(&a, secs(20), ts(5)).await.must("renew_lease");
    assert_eq!(r.epoch, a.epoch, "renewing keeps the epoch");
    assert_eq!(r.owner, "a");
    assert_eq!(r.expires_at, ts(25), "renewing sets expires_at = now + ttl");
    assert_eq!(store.acquire_lease(4, "b", secs(10), ts(20)).await.must("acquire by b"), None, "renewal is effective");

    let stale = Lease { epoch: a.epoch - 1, ..r.clone() };
    assert_err!(
        store.renew_lease(&stale, secs(20), ts(6)).await,
        StoreError::Fenced { .. },
        "renew with a stale epoch"
    );
    let forged = Lease { owner: "b".into(), ..r.clone() };
    assert_err!(
        store.renew_lease(&forged, secs(20), ts(6)).await,
        StoreError::Fenced { .. },
        "renew by an owner that does not hold the lease"
    );

    // Expired, nobody took it: renewal still works.
    let late = store.renew_lease(&r, secs(10), ts(100)).await.must("renew an expired lease nobody took");
    assert_eq!(late.epoch, a.epoch);
    assert_eq!(late.expires_at, ts(110));

    // Taken over: renewal is fenced.
    let b = acquire(&store, 4, "b", secs(10), ts(200)).await;
    assert_err!(store.renew_lease(&late, secs(10), ts(201)).await, StoreError::Fenced { .. }, "renew after takeover");
    assert_eq!(store.list_leases().await.must("list_leases"), vec![b], "a fenced renewal changes nothing");

    let never = Lease { shard: 99, owner: "a".into(), epoch: 1, expires_at: ts(10) };
    assert_err!(
        store.renew_lease(&never, secs(10), t0()).await,
        StoreError::Fenced { .. },
        "renew of a never-held shard"
    );
}

/// Releasing frees the shard (next holder gets a higher epoch); release by a non-holder is `Fenced`.
pub async fn lease_release<S: Store>(store: S) {
    let a = acquire(&store, 5, "a", secs(60), t0()).await;
    store.release_lease(&a).await.must("release_lease");
    let b = store.acquire_lease(5, "b", secs(60), ts(1)).await.must("acquire after release");
    let b = b.expect("a released lease is free even before its expiry");
    assert!(b.epoch > a.epoch, "the next holder after a release gets a higher epoch ({} then {})", a.epoch, b.epoch);
    assert_err!(store.release_lease(&a).await, StoreError::Fenced { .. }, "release by the former holder");
    assert_err!(store.renew_lease(&a, secs(60), ts(2)).await, StoreError::Fenced { .. }, "renew by the former holder");
    let forged = Lease { owner: "a".into(), ..b.clone() };
    assert_err!(store.release_lease(&forged).await, StoreError::Fenced { .. }, "release by a non-holder, right epoch");
    assert_eq!(
        store.acquire_lease(5, "c", secs(60), ts(3)).await.must("acquire by c"),
        None,
        "rejected releases leave b's lease in place"
    );
    store.release_lease(&b).await.must("release by b");
    assert_err!(
        store.renew_lease(&b, secs(60), ts(4)).await,
        StoreError::Fenced { .. },
        "renew after one's own release"
    );
    let c = acquire(&store, 5, "c", secs(60), ts(5)).await;
    assert!(c.epoch > b.epoch);
}

/// `list_leases` returns every lease row, held or expired, ordered by shard.
pub async fn lease_list<S: Store>(store: S) {
    assert!(store.list_leases().await.must("list_leases empty").is_empty(), "no leases in a fresh store");
    let l7 = acquire(&store, 7, "x", secs(10), t0()).await;
    let l2 = acquire(&store, 2, "y", secs(100), t0()).await;
    let l0 = acquire(&store, 0, "z", secs(1), t0()).await;
    let leases = store.list_leases().await.must("list_leases");
    assert_eq!(leases, vec![l0, l2, l7.clone()], "ordered by shard, expired included");
    let l7b = acquire(&store, 7, "w", secs(10), ts(50)).await;
    let leases = store.list_leases().await.must("list_leases after takeover");
    assert_eq!(leases.len(), 3, "one row per shard");
    assert_eq!(leases[2], l7b, "the row shows the current holder");
    assert!(l7b.epoch > l7.epoch);
}

/// `renew_leases` renews each lease still held at its epoch and reports `Fenced` for the others, in order; the
/// lost ones stay with their new holder.
pub async fn lease_renew_many<S: Store>(store: S) {
    let a1 = acquire(&store, 1, "a", secs(10), t0()).await;
    let a2 = acquire(&store, 2, "a", secs(10), t0()).await;
    let a3 = acquire(&store, 3, "a", secs(10), t0()).await;
    // Shard 2 expires and is taken by b; a still believes it holds it.
    let b2 = acquire(&store, 2, "b", secs(10), ts(10)).await;
    let out = store.renew_leases(&[a1.clone(), a2.clone(), a3.clone()], secs(20), ts(10)).await.must("renew_leases");
    assert_eq!(out.len(), 3, "one result per lease");
    let r1 = out[0].as_ref().expect("shard 1 is still a's (expired but not taken)");
    assert_eq!((r1.shard, r1.epoch, r1.expires_at), (1, a1.epoch, ts(30)));
    assert!(matches!(out[1], Err(StoreError::Fenced { shard: 2, .. })), "shard 2 was taken: {:?}", out[1]);
    let r3 = out[2].as_ref().expect("shard 3 is still a's");
    assert_eq!((r3.shard, r3.expires_at), (3, ts(30)));
    let leases = store.list_leases().await.must("list_leases");
    assert_eq!(leases.iter().find(|l| l.shard == 2), Some(&b2), "the lost lease is untouched");
    assert!(store.renew_leases(&[], secs(20), ts(11)).await.must("renew nothing").is_empty());
}
