//! Graceful shutdown: SIGTERM during live streams lets them finish (or, past
//! `WICK_SHUTDOWN_TIMEOUT`, ends them with an error line), refuses new connections,
//! and the process exits 0. No stream is ever cut mid-line.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Server, SMOLLM2};
use serde_json::{json, Value};

/// Start `n` streamed generations; each thread waits at `live` once its first line
/// arrived, then reads the rest and returns every line.
fn live_streams(
    s: &Server,
    n: usize,
    num_predict: u32,
    live: &Arc<Barrier>,
) -> Vec<JoinHandle<Vec<String>>> {
    (0..n)
        .map(|i| {
            let client = s.client.clone();
            let url = s.url("/api/generate");
            let live = live.clone();
            std::thread::spawn(move || {
                let body = json!({
                    "model": SMOLLM2,
                    "prompt": format!("Tell me a long story about ship number {i}."),
                    "options": {"num_predict": num_predict, "temperature": 0.8, "seed": i},
                });
                let r = client.post(url).json(&body).send().expect("request");
                assert_eq!(r.status().as_u16(), 200);
                let mut lines = BufReader::new(r).lines();
                let first = lines.next().expect("a first line").expect("read");
                live.wait();
                std::iter::once(Ok(first))
                    .chain(lines)
                    .map(|l| l.expect("the stream is never cut"))
                    .collect()
            })
        })
        .collect()
}

/// Every line is JSON and the last one is `done: true` or an error; returns how many
/// ended each way.
fn endings(streams: Vec<JoinHandle<Vec<String>>>) -> (usize, usize) {
    let (mut done, mut failed) = (0, 0);
    for h in streams {
        let lines = h.join().expect("stream thread");
        let parsed: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).expect("each line is whole JSON"))
            .collect();
        let last = parsed.last().expect("lines");
        if last["done"] == true {
            done += 1;
        } else {
            let err = last["error"]
                .as_str()
                .expect("the last line is done or an error");
            assert!(err.contains("shutting down"), "{err}");
            failed += 1;
        }
        assert!(
            parsed[..parsed.len() - 1]
                .iter()
                .all(|l| l["done"] == false),
            "only the last line ends the stream"
        );
    }
    (done, failed)
}

fn port_of(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_string()
}

#[test]
fn sigterm_lets_live_streams_finish_and_exits_zero() {
    let mut s = Server::with_smollm2();
    let live = Arc::new(Barrier::new(5));
    let streams = live_streams(&s, 4, 24, &live);
    live.wait();
    let status = s.terminate(Duration::from_secs(60));
    assert!(status.success(), "wick exited with {status}");
    assert_eq!(
        endings(streams),
        (4, 0),
        "all 4 streams finish within the drain"
    );
}

#[test]
fn past_the_drain_timeout_streams_end_with_an_error_line() {
    let mut s = Server::with_smollm2_env(&[("WICK_SHUTDOWN_TIMEOUT", "1s")]);
    let addr = port_of(&s);
    let live = Arc::new(Barrier::new(5));
    let streams = live_streams(&s, 4, 2000, &live);
    live.wait();
    let base = s.base.clone();
    let watcher = std::thread::spawn(move || {
        // Once the signal is in, nobody new gets in.
        std::thread::sleep(Duration::from_millis(400));
        TcpStream::connect(&addr).is_err()
    });
    let status = s.terminate(Duration::from_secs(30));
    assert!(status.success(), "wick at {base} exited with {status}");
    assert!(
        watcher.join().expect("watcher"),
        "a new connection was accepted while draining"
    );
    let (done, failed) = endings(streams);
    assert_eq!(done + failed, 4);
    assert!(
        failed > 0,
        "2000-token generations cannot all finish in 1 s"
    );
}
