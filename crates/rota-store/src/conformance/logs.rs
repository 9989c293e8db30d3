//! Run logs: append and read by sequence number.

use super::support::*;
use crate::{LogLine, Store, StoreError};

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `append_logs` returns the last sequence number; `read_logs` pages with `after_seq` and `limit`.
pub async fn logs_append_and_read<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 0, None).await;
    let run = run_at(&store, &task, ts(0)).await;
    let long = "x".repeat(10_000);
    let first = lines(&["line one", "", "ünïcödé 🚀 \"quoted\" \\ back\tslash"]);
    let s1 = store.append_logs(run.id, "stdout", &first, ts(1)).await.must("append_logs stdout");
    let second = vec!["error: something".to_string(), long.clone()];
    let s2 = store.append_logs(run.id, "stderr", &second, ts(2)).await.must("append_logs stderr");
    assert!(s2 > s1, "sequence numbers increase: {s1} then {s2}");
    let s3 = store.append_logs(run.id, "scheduler", &lines(&["dispatched"]), ts(3)).await.must("append_logs");
    assert!(s3 > s2, "sequence numbers increase: {s2} then {s3}");

    let all = store.read_logs(run.id, 0, 100).await.must("read_logs all");
    assert_eq!(all.len(), 6, "all six lines: {all:?}");
    assert!(all.iter().all(|l| l.seq > 0), "sequence numbers are positive (after_seq 0 reads from the start)");
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "read_logs in increasing seq order");
    assert_eq!(all[2].seq, s1, "append_logs returns the seq of its last line");
    assert_eq!(all[4].seq, s2);
    assert_eq!(all[5].seq, s3);
    let expect: Vec<(String, String, chrono::DateTime<chrono::Utc>)> = first
        .iter()
        .map(|l| ("stdout".to_string(), l.clone(), ts(1)))
        .chain(second.iter().map(|l| ("stderr".to_string(), l.clone(), ts(2))))
        .chain(std::iter::once(("scheduler".to_string(), "dispatched".to_string(), ts(3))))
        .collect();
    let got: Vec<(String, String, chrono::DateTime<chrono::Utc>)> =
        all.iter().map(|l: &LogLine| (l.stream.clone(), l.line.clone(), l.at)).collect();
    assert_eq!(got, expect, "stream, line text (exact, including empty and long lines) and timestamp");
    assert!(all.iter().all(|l| l.run_id == run.id), "run_id of every line");

    let after = store.read_logs(run.id, s1, 100).await.must("read_logs after s1");
    assert_eq!(after, all[3..].to_vec(), "after_seq excludes lines up to and including it");
    let limited = store.read_logs(run.id, 0, 2).await.must("read_logs limit 2");
    assert_eq!(limited, all[..2].to_vec(), "limit honoured");
    let mid = store.read_logs(run.id, all[1].seq, 2).await.must("read_logs after line 2, limit 2");
    assert_eq!(mid, all[2..4].to_vec(), "after_seq and limit together");
    assert!(store.read_logs(run.id, s3, 100).await.must("read_logs at the end").is_empty(), "nothing after the last");
}

/// Logs of different runs are separate.
pub async fn logs_separate_runs<S: Store>(store: S) {
    let task = create_task(&store, "ns", "t", 0, None).await;
    let a = run_at(&store, &task, ts(0)).await;
    let b = run_at(&store, &task, ts(60)).await;
    store.append_logs(a.id, "stdout", &lines(&["a1", "a2"]), ts(1)).await.must("append a");
    store.append_logs(b.id, "stdout", &lines(&["b1"]), ts(1)).await.must("append b");
    store.append_logs(a.id, "stdout", &lines(&["a3"]), ts(2)).await.must("append a again");
    let la = store.read_logs(a.id, 0, 100).await.must("read a");
    let lb = store.read_logs(b.id, 0, 100).await.must("read b");
    assert_eq!(la.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), vec!["a1", "a2", "a3"], "run a's lines");
    assert_eq!(lb.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), vec!["b1"], "run b's lines");
    assert!(lb.iter().all(|l| l.run_id == b.id));
    match store.read_logs(b.id + 1_000_000, 0, 100).await {
        Ok(v) => assert!(v.is_empty(), "read_logs of an unknown run: {v:?}"),
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => panic!("read_logs of an unknown run: expected empty or NotFound, got {e:?}"),
    }
}
