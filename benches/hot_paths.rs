//! Micro-benchmarks of the hot paths: `cargo bench --bench hot_paths`.
//!
//! Wall-clock figures (GB/s, ns) vary with the machine's load; for comparing two versions of the
//! code, count instructions instead, which is repeatable:
//! `valgrind --tool=callgrind target/release/deps/hot_paths-* --callgrind` (see BENCHMARKS.md).
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it reads the clock itself.

use std::hint::black_box;
use std::time::{Duration, Instant};

use wschat::ws::frame::{FrameHeader, OpCode, encode_frame};
use wschat::ws::mask::{apply_mask, apply_mask_bytewise};
use wschat::ws::utf8::Utf8Validator;

/// Runs `work` repeatedly for about `budget` and returns the median time per call over 7 batches.
/// Under callgrind (`budget` zero) it runs a fixed 1,000 times instead, so that the instruction
/// counts do not depend on how fast the machine happens to be.
fn measure(budget: Duration, mut work: impl FnMut()) -> Duration {
    if budget.is_zero() {
        for _ in 0..1000 {
            work();
        }
        return Duration::from_nanos(1);
    }
    // Calibrate the batch size to ~budget/7.
    let mut batch = 1u32;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            work();
        }
        if start.elapsed() * 7 >= budget || batch >= 1 << 30 {
            break;
        }
        batch *= 2;
    }
    let mut samples: Vec<Duration> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                work();
            }
            start.elapsed() / batch
        })
        .collect();
    samples.sort();
    samples[3]
}

fn gb_per_s(bytes: usize, per_call: Duration) -> f64 {
    bytes as f64 / per_call.as_secs_f64() / 1e9
}

fn main() {
    // Under callgrind, run each path a fixed number of times instead of timing it.
    let callgrind = std::env::args().any(|arg| arg == "--callgrind");
    let budget = if callgrind {
        Duration::ZERO
    } else {
        Duration::from_millis(700)
    };
    let key = [0x37, 0xfa, 0x21, 0x3d];

    for size in [16usize, 1024, 64 * 1024, 1 << 20] {
        let mut payload = vec![0xa5u8; size];
        let fast = measure(budget, || {
            black_box(apply_mask(black_box(&mut payload), key, 1));
        });
        let slow = measure(budget, || {
            black_box(apply_mask_bytewise(black_box(&mut payload), key, 1));
        });
        println!(
            "unmask size={size} word_gb_s={:.2} bytewise_gb_s={:.2} speedup={:.1}",
            gb_per_s(size, fast),
            gb_per_s(size, slow),
            slow.as_secs_f64() / fast.as_secs_f64()
        );
    }

    for (name, len, mask) in [
        ("7bit_masked", 16, true),
        ("16bit_masked", 1024, true),
        ("64bit_unmasked", 70_000, false),
    ] {
        let mut frame = Vec::new();
        encode_frame(
            &mut frame,
            true,
            OpCode::Binary,
            &vec![1; len],
            mask.then_some(key),
        );
        let header = &frame[..14];
        let per = measure(budget, || {
            black_box(FrameHeader::parse(black_box(header)).ok());
        });
        println!("frame_header_parse form={name} ns={:.1}", per.as_secs_f64() * 1e9);
    }

    let ascii = "hello, world! ".repeat(4096);
    let mixed = "κόσμε, 世界, 🌍 ".repeat(2048);
    for (name, text) in [("ascii", ascii.as_bytes()), ("multibyte", mixed.as_bytes())] {
        let per = measure(budget, || {
            let mut validator = Utf8Validator::new();
            // Fed in 1000-byte pieces, as a payload arriving over several reads would be.
            for chunk in text.chunks(1000) {
                black_box(validator.feed(black_box(chunk)).ok());
            }
            black_box(validator.finish().ok());
        });
        println!(
            "utf8_validate text={name} bytes={} gb_s={:.2}",
            text.len(),
            gb_per_s(text.len(), per)
        );
    }
}
