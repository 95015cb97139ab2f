//! Zero-copy relaying of large literals between two plain TCP sockets: `splice(2)` moves the
//! bytes from one socket into a pipe and from the pipe into the other, and they never enter the
//! gate's memory. The relay uses it only inside a literal whose remaining length the response
//! tracker knows (a message body in a FETCH response), so it keeps knowing exactly where lines
//! end; everything else goes through its buffers.
//!
//! Pipes are borrowed from a small per-thread pool only while bytes are in flight and given back
//! empty, so an idle session holds none.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;

use rustix::pipe::{
    fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags,
};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes a pipe is asked to hold (the kernel's default is 64 KiB; `/proc/sys/fs/pipe-max-size`
/// bounds what an unprivileged process may ask, 1 MiB by default).
pub const PIPE_SIZE: usize = 1024 * 1024;
/// Pipes kept per thread for reuse. Few: the kernel counts a pipe's whole size against the
/// user's `pipe-user-pages-soft` even while it is empty.
const POOL: usize = 4;
/// A pipe smaller than this (the kernel gives small ones to a user past its pipe quota) is not
/// worth the system calls: the relay uses its buffer instead.
const SMALLEST: usize = 64 * 1024;

/// A pipe: read end, write end and what it can hold.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    pub capacity: usize,
}

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// An empty pipe from the pool, or a new one.
pub fn take_pipe() -> io::Result<Pipe> {
    if let Some(p) = PIPES.with(|p| p.borrow_mut().pop()) {
        return Ok(p);
    }
    let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
    // A larger pipe moves more per system call; whatever size the kernel allows still works (a
    // user past `/proc/sys/fs/pipe-user-pages-soft` gets small pipes).
    let capacity = fcntl_setpipe_size(&write, PIPE_SIZE)
        .or_else(|_| fcntl_getpipe_size(&write))
        .unwrap_or(0);
    if capacity < SMALLEST {
        return Err(io::Error::other(format!("pipe of {capacity} bytes only")));
    }
    Ok(Pipe {
        read,
        write,
        capacity,
    })
}

/// Returns a pipe that holds nothing to the pool.
pub fn give_pipe(pipe: Pipe) {
    PIPES.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL {
            p.push(pipe);
        }
    });
}

/// Moves up to `len` bytes from `src` into `pipe`; 0 at the end of the stream. `WouldBlock`
/// when `src` has nothing (tokio then waits for it to become readable again).
pub fn fill(src: &TcpStream, pipe: &Pipe, len: usize) -> io::Result<usize> {
    src.try_io(Interest::READABLE, || {
        splice(
            src,
            None,
            &pipe.write,
            None,
            len,
            SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
        )
        .map_err(io::Error::from)
    })
}

/// Moves up to `len` bytes from `pipe` into `dst`. `WouldBlock` when `dst` is full.
pub fn drain(pipe: &Pipe, dst: &TcpStream, len: usize) -> io::Result<usize> {
    dst.try_io(Interest::WRITABLE, || {
        splice(
            &pipe.read,
            None,
            dst,
            None,
            len,
            SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
        )
        .map_err(io::Error::from)
    })
}
