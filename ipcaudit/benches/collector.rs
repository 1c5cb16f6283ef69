//! The collector's work per record, without the kernel: decode (ring-buffer bytes → event),
//! the ownership model, and the JSON encoder, over a stream of raw ABI records shaped like a
//! busy host's lifecycle traffic: processes forking, creating, attaching, detaching and
//! removing segments, a first semop and a message each, and exiting.
//!
//! `cargo bench -p ipcaudit --bench collector` (`cargo xtask bench` runs it and reports
//! records/s; the target is ≥ 1M records/s on one core for decode + model + serialize).

use std::{hint::black_box, mem::offset_of, time::Duration};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipcaudit::{
    clock::Clocks,
    decode::{Record, decode_record},
    enrich::ProcessContext,
    model::{Model, ModelConfig},
    sink::{Encoder, Format, Session},
};
use ipcaudit_ebpf::{
    ExitRecord, ForkRecord, Header, SemBuf, SemOpRecord, SyscallRecord, flag, kind,
};

const CLOCKS: Clocks = Clocks {
    mono_to_wall: 1_700_000_000_000_000_000,
    boot_wall_ns: 1_699_990_000_000_000_000,
    ticks_per_sec: 100,
};
const NS: u32 = 4_026_531_839;

/// The collector's allocator (`main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Builds raw records as the kernel writes them.
struct Stream {
    records: Vec<Vec<u8>>,
    ts: u64,
}

impl Stream {
    fn header(&mut self, b: &mut [u8], kind: u16, flags: u16, pid: u32) {
        self.ts += 2_000;
        let put = |b: &mut [u8], off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(b, offset_of!(Header, kind), &kind.to_ne_bytes());
        put(b, offset_of!(Header, flags), &flags.to_ne_bytes());
        put(b, offset_of!(Header, tgid), &pid.to_ne_bytes());
        put(b, offset_of!(Header, tid), &pid.to_ne_bytes());
        put(b, offset_of!(Header, uid), &1000u32.to_ne_bytes());
        put(b, offset_of!(Header, ipc_ns), &NS.to_ne_bytes());
        put(b, offset_of!(Header, ts_ns), &self.ts.to_ne_bytes());
        let start = 1_000_000_000u64 + u64::from(pid) * 10_000_000;
        put(b, offset_of!(Header, start_ns), &start.to_ne_bytes());
        put(b, offset_of!(Header, comm), b"worker\0\0\0\0\0\0\0\0\0\0");
    }

    fn syscall(&mut self, kind: u16, pid: u32, args: [u64; 6], ret: i64) {
        let mut b = vec![0u8; size_of::<SyscallRecord>()];
        self.header(&mut b, kind, 0, pid);
        b[offset_of!(SyscallRecord, ret)..][..8].copy_from_slice(&ret.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            b[offset_of!(SyscallRecord, args) + 8 * i..][..8].copy_from_slice(&a.to_ne_bytes());
        }
        self.records.push(b);
    }

    fn semop(&mut self, pid: u32, semid: i32, op: i16) {
        let mut b = vec![0u8; size_of::<SemOpRecord>()];
        self.header(&mut b, kind::SEMOP, flag::TIMED, pid);
        let args = [u64::from(semid.cast_unsigned()), 0x7000, 1, 0, 0, 0];
        for (i, a) in args.iter().enumerate() {
            b[offset_of!(SyscallRecord, args) + 8 * i..][..8].copy_from_slice(&a.to_ne_bytes());
        }
        let ops = offset_of!(SemOpRecord, ops);
        let sb = SemBuf {
            sem_num: 0,
            sem_op: op,
            sem_flg: 0,
        };
        b[ops + 2..ops + 4].copy_from_slice(&sb.sem_op.to_ne_bytes());
        self.records.push(b);
    }

    fn fork(&mut self, parent: u32, child: u32) {
        let mut b = vec![0u8; size_of::<ForkRecord>()];
        self.header(&mut b, kind::FORK, 0, parent);
        b[offset_of!(ForkRecord, child_tgid)..][..4].copy_from_slice(&child.to_ne_bytes());
        let start = 1_000_000_000u64 + u64::from(child) * 10_000_000;
        b[offset_of!(ForkRecord, child_start_ns)..][..8].copy_from_slice(&start.to_ne_bytes());
        self.records.push(b);
    }

    fn exit(&mut self, pid: u32) {
        let mut b = vec![0u8; size_of::<ExitRecord>()];
        self.header(&mut b, kind::EXIT, 0, pid);
        self.records.push(b);
    }

    /// `procs` processes, each: fork, shmget, shmat, semget, semop, msgget, msgsnd, msgrcv,
    /// shmdt, three IPC_RMIDs, exit — 13 records.
    fn lifecycle(procs: u32) -> Vec<Vec<u8>> {
        let mut s = Self {
            records: Vec::new(),
            ts: 1_000_000_000_000,
        };
        for i in 0..procs {
            let pid = 10_000 + i;
            let id = i32::try_from(i).unwrap_or(i32::MAX);
            let id_arg = u64::from(id.cast_unsigned());
            let addr = 0x7f00_0000_0000u64 + u64::from(i) * 0x10_0000;
            s.fork(1, pid);
            s.syscall(kind::SHMGET, pid, [0, 8192, 0o1600, 0, 0, 0], i64::from(id));
            s.syscall(
                kind::SHMAT,
                pid,
                [id_arg, 0, 0, 0, 0, 0],
                addr.cast_signed(),
            );
            s.syscall(kind::SEMGET, pid, [0, 1, 0o1600, 0, 0, 0], i64::from(id));
            s.semop(pid, id, 1);
            s.syscall(kind::MSGGET, pid, [0, 0o1600, 0, 0, 0, 0], i64::from(id));
            s.syscall(kind::MSGSND, pid, [id_arg, 0x7000, 64, 0, 0, 0], 0);
            s.syscall(kind::MSGRCV, pid, [id_arg, 0x7000, 64, 0, 0, 0], 64);
            s.syscall(kind::SHMDT, pid, [addr, 0, 0, 0, 0, 0], 0);
            s.syscall(kind::SHMCTL, pid, [id_arg, 0, 0, 0, 0, 0], 0);
            s.syscall(kind::SEMCTL, pid, [id_arg, 0, 0, 0, 0, 0], 0);
            s.syscall(kind::MSGCTL, pid, [id_arg, 0, 0, 0, 0, 0], 0);
            s.exit(pid);
        }
        s.records
    }
}

/// Everything the collector does with a record but read the ring and write the line out.
fn collect(records: &[Vec<u8>], model: &mut Model, encoder: Option<&Encoder>) -> usize {
    let context = ProcessContext::default();
    let mut line = String::with_capacity(1024);
    let mut bytes = 0;
    for r in records {
        match decode_record(r, &CLOCKS) {
            Ok(Record::Event(ev)) => {
                let applied = model.apply(&ev);
                if let Some(encoder) = encoder {
                    if let Some(action) = applied.action {
                        line.clear();
                        encoder.event(
                            &ev,
                            action,
                            applied.object.as_ref(),
                            applied.posix.as_ref(),
                            &context,
                            &mut line,
                        );
                        bytes += line.len();
                    }
                    for (action, object) in &applied.derived {
                        line.clear();
                        encoder.event(&ev, *action, Some(object), None, &context, &mut line);
                        bytes += line.len();
                    }
                }
            }
            Ok(Record::Aggregate(agg)) => {
                black_box(model.apply_aggregate(&agg));
            }
            // The generated stream has no stacks (they are symbolized off the hot path).
            Ok(Record::Stack(s)) => {
                black_box(s);
            }
            Err(e) => panic!("the generated stream does not decode: {e}"),
        }
    }
    bytes
}

fn bench(c: &mut Criterion) {
    let records = Stream::lifecycle(20_000);
    let n = u64::try_from(records.len()).unwrap_or(u64::MAX);
    let encoder = Encoder {
        format: Format::Json,
        session: Session {
            boot: "680d1be7".to_owned(),
            host: None,
        },
    };
    let config = ModelConfig {
        boot_time_ns: CLOCKS.boot_wall_ns,
        ..ModelConfig::default()
    };
    let mut group = c.benchmark_group("collector");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("decode", |b| {
        b.iter(|| {
            for r in &records {
                black_box(decode_record(r, &CLOCKS).ok());
            }
        });
    });
    group.bench_function("decode+model", |b| {
        b.iter(|| {
            let mut model = Model::new(config);
            collect(&records, &mut model, None)
        });
    });
    group.bench_function("decode+model+json", |b| {
        b.iter(|| {
            let mut model = Model::new(config);
            collect(&records, &mut model, Some(&encoder))
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
