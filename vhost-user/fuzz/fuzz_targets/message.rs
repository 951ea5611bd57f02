//! The vhost-user message handler: a frontend that sends arbitrary message
//! streams (headers, sizes, bodies) over a real socket, with memfds attached
//! to every SET_MEM_TABLE (as many as it claims regions, at most 8). The
//! backend must disconnect or keep serving, never panic or hang.
#![no_main]

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use petrel_vhost_user::backend::serve_one;
use petrel_vhost_user::Port;

fn memfd(len: u64) -> File {
    // SAFETY: a valid C string; the fd is checked and then owned by the File.
    let fd = unsafe { libc::memfd_create(c"fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a fresh fd nothing else owns.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(len).expect("set_len");
    f
}

/// Sends `bytes` with `fds` attached (SCM_RIGHTS).
fn send_with_fds(s: &UnixStream, bytes: &[u8], fds: &[i32]) {
    let mut cbuf = [0u8; 256];
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    // SAFETY: plain libc sendmsg with buffers that outlive the call; the
    // control message is built with the CMSG macros inside cbuf's bounds.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            let len = libc::CMSG_SPACE((fds.len() * 4) as u32) as usize;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = len;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast::<i32>(), fds.len());
        }
        libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
    }
}

fuzz_target!(|data: &[u8]| {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let files: Vec<File> = (0..8).map(|_| memfd(1 << 16)).collect();
    let fds: Vec<i32> = files.iter().map(AsRawFd::as_raw_fd).collect();
    // Split the input into messages: 12-byte header, then `size` bytes (clipped).
    let mut rest = data;
    let mut out = Vec::new();
    while rest.len() >= 12 {
        let size = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
        let end = (12 + size.min(rest.len() - 12)).min(rest.len());
        let (m, r) = rest.split_at(end);
        out.push(m.to_vec());
        rest = r;
    }
    let writer = std::thread::spawn(move || {
        for m in &out {
            let code = u32::from_le_bytes(m[0..4].try_into().expect("4 bytes"));
            if code == 5 && m.len() >= 16 {
                let n = (u32::from_le_bytes(m[12..16].try_into().expect("4 bytes")) as usize).min(8);
                send_with_fds(&theirs, m, &fds[..n]);
            } else {
                let _ = (&theirs).write_all(m);
            }
        }
        drop(theirs);
        drop(files);
    });
    let port = Arc::new(Port::new("fuzz", 2));
    let _ = serve_one(ours, port);
    writer.join().expect("writer");
});
