//! Faults between cairn and a real Swift: a loopback HTTP proxy that injects 503s,
//! connection resets, slow replies and a 401 (a revoked token) in the middle of a
//! backup. The backup must complete and check must pass; with faults that never
//! stop, the command must fail within its retry bound and leave the repository
//! consistent. Needs the tempauth Swift of `.ci/test` (ST_AUTH etc.); never skips.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to request number n (counted from 1).
struct Faults {
    count: AtomicU64,
    /// Every request fails with 503 while set.
    down: AtomicBool,
    /// Inject the periodic faults.
    flaky: AtomicBool,
    injected: AtomicU64,
    /// This many requests get 429 with `Retry-After: 2`.
    throttled: AtomicU64,
}

async fn read_request(c: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = c.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        let n = c.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    Some(buf)
}

/// Sets `Connection: close` so that every exchange is one request on one connection.
fn close_after(req: &[u8]) -> Vec<u8> {
    let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    let head = String::from_utf8_lossy(&req[..head_end]);
    let mut out: String = head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    out.push_str("Connection: close\r\n");
    let mut v = out.into_bytes();
    v.extend_from_slice(&req[head_end..]);
    v
}

async fn handle(mut c: TcpStream, upstream: u16, me: u16, f: Arc<Faults>) {
    let Some(req) = read_request(&mut c).await else { return };
    let n = f.count.fetch_add(1, Ordering::SeqCst) + 1;
    let reply = |status: &str| format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    if f.down.load(Ordering::SeqCst) {
        let _ = c.write_all(reply("503 Service Unavailable").as_bytes()).await;
        return;
    }
    if f.throttled.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| t.checked_sub(1)).is_ok() {
        let r = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let _ = c.write_all(r.as_bytes()).await;
        return;
    }
    if f.flaky.load(Ordering::SeqCst) {
        let fault = match n % 13 {
            3 => Some("503"),
            6 => Some("reset"),
            9 => Some("slow"),
            11 if n < 40 => Some("401"),
            _ => None,
        };
        match fault {
            Some("503") => {
                f.injected.fetch_add(1, Ordering::SeqCst);
                let _ = c.write_all(reply("503 Service Unavailable").as_bytes()).await;
                return;
            }
            Some("reset") => {
                f.injected.fetch_add(1, Ordering::SeqCst);
                return; // dropped without a reply: the connection breaks mid-request
            }
            Some("401") => {
                f.injected.fetch_add(1, Ordering::SeqCst);
                let _ = c.write_all(reply("401 Unauthorized").as_bytes()).await;
                return;
            }
            Some(_) => {
                f.injected.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            None => {}
        }
    }
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
    if up.write_all(&close_after(&req)).await.is_err() {
        return;
    }
    let mut resp = Vec::new();
    if up.read_to_end(&mut resp).await.is_err() {
        return;
    }
    // Keep the client on the proxy: auth replies name the real storage URL.
    let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n").map_or(resp.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&resp[..head_end])
        .replace(&format!("127.0.0.1:{upstream}"), &format!("127.0.0.1:{me}"));
    let _ = c.write_all(head.as_bytes()).await;
    let _ = c.write_all(&resp[head_end..]).await;
}

/// Starts the proxy in front of the Swift at `upstream`; returns its port.
fn start_proxy(rt: &tokio::runtime::Runtime, upstream: u16, f: Arc<Faults>) -> u16 {
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let me = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        loop {
            let Ok((c, _)) = listener.accept().await else { continue };
            tokio::spawn(handle(c, upstream, me, Arc::clone(&f)));
        }
    });
    me
}

#[test]
fn swift_backup_survives_injected_faults_and_fails_cleanly_when_they_persist() {
    let auth = std::env::var("ST_AUTH").unwrap_or_default();
    assert!(!auth.is_empty(), "ST_AUTH is not set: run the Swift tests through .ci/test");
    let upstream: u16 = auth.split(':').nth(2).and_then(|p| p.split('/').next()).and_then(|p| p.parse().ok()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let faults = Arc::new(Faults {
        count: AtomicU64::new(0),
        down: AtomicBool::new(false),
        flaky: AtomicBool::new(false),
        injected: AtomicU64::new(0),
        throttled: AtomicU64::new(0),
    });
    let port = start_proxy(&rt, upstream, Arc::clone(&faults));
    let proxied_auth = auth.replace(&format!(":{upstream}/"), &format!(":{port}/"));

    let env = TestEnv::new();
    let src = env.path("src");
    for i in 0..20 {
        write(src.join(format!("d{}/f{i}", i % 4)), format!("file {i}\n").repeat(i * 50 + 1));
    }
    write(src.join("big.bin"), Rng::new(11).bytes(6 << 20));
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    let repo = format!("swift:cairn-faults-{}", hex::encode(b));
    let run = |args: &[&str]| {
        let mut full = vec!["-r", repo.as_str(), "-o", "retry.max-delay=0.5"];
        full.extend_from_slice(args);
        env.cmd(full).env("ST_AUTH", &proxied_auth).run()
    };
    run(&["init", "--kdf-memory", "1024", "--kdf-iterations", "1", "--chunk-size", "64K,256K,1M", "--pack-size", "1"])
        .ok();

    // Periodic 503s, resets, slow replies and a 401 during the backup and restore.
    faults.flaky.store(true, Ordering::SeqCst);
    let r = run(&["backup", s(&src)]);
    r.ok();
    let target = env.path("out");
    run(&["restore", "latest", "--target", s(&target)]).ok();
    assert_same_tree(&src, &restored_path(&target, &src));
    faults.flaky.store(false, Ordering::SeqCst);
    assert!(faults.injected.load(Ordering::SeqCst) >= 5, "too few faults were injected to mean anything");
    run(&["check", "--read-data"]).ok();

    // 429 with Retry-After: the retry waits as long as asked (the backoff alone
    // would wait at most 0.5 s), bounded by retry.max-delay.
    faults.throttled.store(1, Ordering::SeqCst);
    let start = Instant::now();
    run(&["-o", "retry.max-delay=5", "snapshots"]).ok();
    assert!(start.elapsed() >= Duration::from_secs(2), "Retry-After was not honoured: {:?}", start.elapsed());
    assert_eq!(faults.throttled.load(Ordering::SeqCst), 0);

    // Faults that never stop: a clear error within the retry bound.
    write(src.join("new.txt"), "only in the failed backup\n");
    faults.down.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let r = run(&["-o", "retry.attempts=3", "backup", s(&src)]);
    r.expect_code(1);
    assert!(r.stderr.contains("gave up after 3 tries"), "{}", r.stderr);
    assert!(start.elapsed() < Duration::from_secs(60), "retries were not bounded");
    faults.down.store(false, Ordering::SeqCst);
    run(&["check"]).ok();
    let snaps = run(&["snapshots", "--json"]);
    assert_eq!(snaps.json().as_array().unwrap().len(), 1, "the failed backup left a snapshot");
}
