// A two-thread 64 B ping-pong over rings of several geometries in one shared mapping, blocks
// interleaved so that the VM's drift cancels (issue 14, last target). Not part of the build:
// copy into a scratch crate with `libc = "0.2"` and run `cargo run --release -- 30`.
// mode 0: spin hand-off (a word line and a buffer); 1: ring, tail cursor, consecutive slots;
// 2: ring, polling a word at the slot's end; 3/4: ring with slot step 39/5. The list below is
// the last one run; the others measured (ring2/4/16/32 slots, 256 one-line slots, 64 slots of
// 192/256 B, a 64 B offset) were edits of it.
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::time::Instant;

const N: usize = 20000; // round trips per block

#[derive(Clone, Copy, Debug)]
struct Cfg { name: &'static str, slots: usize, hdr: usize, stride: usize, off: usize, mode: u8, len: usize }
// mode 0: spin (word line + buffer), 1: ring with tail cursor, 2: ring polling a word at slot end

struct Dir { base: *mut u8 }
unsafe impl Send for Dir {}
unsafe impl Sync for Dir {}

fn pin(cpu: usize) {
    unsafe { let mut s: libc::cpu_set_t = std::mem::zeroed(); libc::CPU_SET(cpu, &mut s); libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &s); }
}

// layout per direction: [tail line @0][head line @128][slots from 256+off]
unsafe fn tail(d: *mut u8) -> &'static AtomicU64 { &*(d as *const AtomicU64) }
unsafe fn headc(d: *mut u8) -> &'static AtomicU64 { &*(d.add(128) as *const AtomicU64) }
unsafe fn slot(d: *mut u8, c: &Cfg, pos: u64) -> *mut u8 { let p = if c.mode == 3 || c.mode == 4 { (pos as usize).wrapping_mul(if c.mode == 3 { 39 } else { 5 }) } else { pos as usize }; d.add(256 + c.off + (p & (c.slots - 1)) * c.stride) }

struct Tx { d: *mut u8, pos: u64 }
struct Rx { d: *mut u8, pos: u64, limit: u64 }

#[inline(never)]
unsafe fn send(c: &Cfg, t: &mut Tx, msg: &[u8]) {
    let s = slot(t.d, c, t.pos);
    match c.mode {
        0 | 1 | 3 | 4 => {
            if c.hdr >= 8 { (s as *mut u64).write_volatile(msg.len() as u64); }
            std::ptr::copy_nonoverlapping(msg.as_ptr(), s.add(c.hdr), msg.len());
            t.pos += 1;
            tail(t.d).store(t.pos, Release);
        }
        _ => {
            (s as *mut u64).write_volatile(msg.len() as u64);
            std::ptr::copy_nonoverlapping(msg.as_ptr(), s.add(c.hdr), msg.len());
            t.pos += 1;
            (&*(s.add(c.stride - 8) as *const AtomicU64)).store(t.pos, Release);
        }
    }
}

#[inline(never)]
unsafe fn recv(c: &Cfg, r: &mut Rx, out: &mut [u8]) {
    let s = slot(r.d, c, r.pos);
    match c.mode {
        0 | 1 | 3 | 4 => {
            if r.pos >= r.limit {
                loop { let t = tail(r.d).load(Acquire); if t > r.pos { r.limit = t; break; } std::hint::spin_loop(); }
            }
        }
        _ => {
            let w = &*(s.add(c.stride - 8) as *const AtomicU64);
            while w.load(Acquire) != r.pos + 1 { std::hint::spin_loop(); }
        }
    }
    let len = if c.hdr >= 8 { (s as *const u64).read_volatile() as usize } else { out.len() };
    std::ptr::copy_nonoverlapping(s.add(c.hdr), out.as_mut_ptr(), len.min(out.len()));
    r.pos += 1;
    if c.mode != 0 { headc(r.d).store(r.pos, Release); }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let blocks: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(15);
    let cfgs = [
        Cfg { name: "spin", slots: 1, hdr: 0, stride: 128, off: 0, mode: 0, len: 64 },
        Cfg { name: "ring64-s128", slots: 64, hdr: 32, stride: 128, off: 0, mode: 1, len: 64 },
        Cfg { name: "ring64-s128-x39", slots: 64, hdr: 32, stride: 128, off: 0, mode: 3, len: 64 },
        Cfg { name: "ring64-s128b", slots: 64, hdr: 32, stride: 128, off: 0, mode: 1, len: 64 },
        Cfg { name: "ring64-s128-x39b", slots: 64, hdr: 32, stride: 128, off: 0, mode: 3, len: 64 },
    ];
    let size = 2 * (256 + 64 + 256 * 256);
    let mem = unsafe { libc::mmap(std::ptr::null_mut(), size * cfgs.len(), libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0) } as *mut u8;
    let half = 256 + 64 + 256 * 256;
    let mut res: Vec<Vec<f64>> = vec![Vec::new(); cfgs.len()];
    let cmd = unsafe { &*(mem as *const AtomicU64) }; // not used
    let _ = cmd;
    for _b in 0..blocks {
        for (i, c) in cfgs.iter().enumerate() {
            let base = unsafe { mem.add(i * size) };
            let (ping, pong) = (Dir { base }, Dir { base: unsafe { base.add(half) } });
            let c = *c;
            let pos0 = unsafe { tail(ping.base).load(Relaxed) };
            let echo = std::thread::spawn(move || {
                pin(1);
                let (ping, pong) = (ping, pong);
                let mut rx = Rx { d: ping.base, pos: pos0, limit: pos0 };
                let mut tx = Tx { d: pong.base, pos: pos0 };
                let mut buf = [0u8; 64];
                for _ in 0..N + 1000 { unsafe { recv(&c, &mut rx, &mut buf[..c.len]); send(&c, &mut tx, &buf[..c.len]); } }
            });
            pin(0);
            let d_ping = unsafe { mem.add(i * size) };
            let d_pong = unsafe { d_ping.add(half) };
            let mut tx = Tx { d: d_ping, pos: pos0 };
            let mut rx = Rx { d: d_pong, pos: pos0, limit: pos0 };
            let mut msg = [0u8; 64];
            let mut buf = [0u8; 64];
            let mut lat = Vec::with_capacity(N);
            for k in 0..N + 1000 {
                msg[0] = k as u8;
                let t = Instant::now();
                unsafe { send(&c, &mut tx, &msg[..c.len]); recv(&c, &mut rx, &mut buf[..c.len]); }
                let e = t.elapsed().as_nanos() as f64;
                assert_eq!(buf[0], k as u8);
                if k >= 1000 { lat.push(e); }
            }
            echo.join().unwrap();
            lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
            res[i].push(lat[lat.len() / 2]);
        }
    }
    let spin: Vec<f64> = res[0].clone();
    for (i, c) in cfgs.iter().enumerate() {
        let mut r: Vec<f64> = res[i].iter().zip(&spin).map(|(a, b)| a / b).collect();
        r.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let mut v = res[i].clone(); v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("{:20} p50 median {:6.0} ns  ratio to spin (per block) median {:.2}  [{:.2}..{:.2}]", c.name, v[v.len()/2], r[r.len()/2], r[0], r[r.len()-1]);
    }
}
