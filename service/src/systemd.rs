//! Telling systemd how the service is doing (`sd_notify`): `READY=1` once
//! the programs are attached (`Type=notify` units start when capture does),
//! `RELOADING=1` during a SIGHUP reload, `STOPPING=1` when stopping. A
//! datagram to `$NOTIFY_SOCKET`, no library; nothing when the variable is
//! not set (not under systemd).

use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=value` lines) to systemd, if it
/// listens. Failures are logged at debug level: notifying is best effort.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else { return };
    if let Err(error) = send(&path, state) {
        tracing::debug!(%error, socket = ?path, "cannot notify systemd");
    }
}

/// `RELOADING=1` with the time systemd expects beside it.
pub fn notify_reloading() {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec to the pointer it is given,
    // which points to a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let usec = (now.tv_sec as u64).saturating_mul(1_000_000) + (now.tv_nsec as u64) / 1_000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    match bytes.strip_prefix(b"@") {
        // An abstract socket address.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), std::path::Path::new(path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use flowsql_store::test_util::TempDir;

    use super::*;

    #[test]
    fn a_state_reaches_the_socket() {
        let dir = TempDir::new("notify");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        send(path.as_os_str(), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }
}
