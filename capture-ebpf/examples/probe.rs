use flowsql_capture::{Capture, CaptureConfig};
fn main() {
    tracing_subscriber_init();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let config = CaptureConfig { cgroup: std::env::args().nth(1).map(Into::into), ..CaptureConfig::default() };
        let (capture, mut reader) = Capture::attach(&config).unwrap();
        for u in capture.unavailable() { println!("UNAVAILABLE {u}"); }
        let secs: u64 = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(3);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            tokio::select! {
                r = reader.read(|item| { match flowsql_capture::abi::decode(item) { Ok(rec) => println!("{rec:?}"), Err(e) => println!("ERR {e}") } }) => { r.unwrap(); }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        if let Some(open) = capture.open_sockets() { for r in open.read().unwrap() { println!("OPEN {:?}", flowsql_capture::abi::decode(&r)); } }
        println!("{:?}", capture.counters().unwrap());
    });
}
fn tracing_subscriber_init() {}
