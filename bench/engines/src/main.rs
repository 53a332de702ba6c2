//! redb and fjall on the durable store's access pattern: point reads of
//! 100k keys (`tenant, bucket, hash, key` -> 64-byte value), and writes
//! committed as the store's committer thread commits them: one batch per
//! fsync, of 1 write (a lone writer) or 32 (32 writers sharing a group
//! commit), plus commits left to the OS (`--fsync every=`).
//!
//! Reads here are the engine's own; the store serves reads from memory, so
//! they only matter for loading at start-up. What decides is the cost of a
//! group commit and how it scales with the batch.

use std::time::Instant;

use redb::{ReadableDatabase, TableDefinition};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
const KEYS: usize = 100_000;
const READS: usize = 300_000;
const COMMITS: usize = 100;

fn key(i: usize) -> Vec<u8> {
    let mut k = b"\x00\x06tenant\x00\x07default".to_vec();
    k.extend_from_slice(&(i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k.extend_from_slice(format!("key-{i}").as_bytes());
    k
}

/// xorshift: the same sequence of keys for both engines.
fn next(state: &mut u64) -> usize {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state % KEYS as u64) as usize
}

fn per_op(start: Instant, ops: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / ops as f64
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: engines DIR (on the disk to measure)");
    let value = vec![7u8; 64];
    let mut state = 88_172_645_463_325_252u64;

    // Building the key costs the same in every loop; measured alone.
    let start = Instant::now();
    let mut sink = 0usize;
    for _ in 0..READS {
        sink += key(next(&mut state)).len();
    }
    println!("building a key: {:.0} ns (subtract from the reads below) [{sink}]", per_op(start, READS));

    let path = format!("{dir}/redb.db");
    let _ = std::fs::remove_file(&path);
    let db = redb::Database::create(&path).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut table = tx.open_table(TABLE).unwrap();
        for i in 0..KEYS {
            table.insert(key(i).as_slice(), value.as_slice()).unwrap();
        }
    }
    tx.commit().unwrap();
    let start = Instant::now();
    for _ in 0..READS {
        let k = key(next(&mut state));
        let tx = db.begin_read().unwrap();
        let table = tx.open_table(TABLE).unwrap();
        assert!(table.get(k.as_slice()).unwrap().is_some());
    }
    println!("redb  get (a read transaction each): {:.0} ns", per_op(start, READS));
    for batch in [1usize, 32] {
        let start = Instant::now();
        for _ in 0..COMMITS {
            let tx = db.begin_write().unwrap();
            {
                let mut table = tx.open_table(TABLE).unwrap();
                for _ in 0..batch {
                    table.insert(key(next(&mut state)).as_slice(), value.as_slice()).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "redb  fsynced commit of {batch:>2}: {:.2} ms, {:.0} writes/s",
            secs * 1e3 / COMMITS as f64,
            (COMMITS * batch) as f64 / secs
        );
    }
    let start = Instant::now();
    for _ in 0..COMMITS * 20 {
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(redb::Durability::None).unwrap();
        {
            let mut table = tx.open_table(TABLE).unwrap();
            table.insert(key(next(&mut state)).as_slice(), value.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    println!("redb  commit of 1, no fsync: {:.1} us", per_op(start, COMMITS * 20) / 1e3);
    drop(db);

    let path = format!("{dir}/fjall");
    let _ = std::fs::remove_dir_all(&path);
    let db = fjall::Database::builder(&path)
        .manual_journal_persist(true)
        .open()
        .unwrap();
    let data = db.keyspace("data", fjall::KeyspaceCreateOptions::default).unwrap();
    let mut batch = db.batch();
    for i in 0..KEYS {
        batch.insert(&data, key(i), value.clone());
    }
    batch.commit().unwrap();
    db.persist(fjall::PersistMode::SyncAll).unwrap();
    let start = Instant::now();
    for _ in 0..READS {
        assert!(data.get(key(next(&mut state))).unwrap().is_some());
    }
    println!("fjall get: {:.0} ns", per_op(start, READS));
    for size in [1usize, 32] {
        let start = Instant::now();
        for _ in 0..COMMITS {
            let mut batch = db.batch();
            for _ in 0..size {
                batch.insert(&data, key(next(&mut state)), value.clone());
            }
            batch.commit().unwrap();
            db.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "fjall fsynced commit of {size:>2}: {:.2} ms, {:.0} writes/s",
            secs * 1e3 / COMMITS as f64,
            (COMMITS * size) as f64 / secs
        );
    }
    let start = Instant::now();
    for _ in 0..COMMITS * 20 {
        let mut batch = db.batch().durability(Some(fjall::PersistMode::Buffer));
        batch.insert(&data, key(next(&mut state)), value.clone());
        batch.commit().unwrap();
    }
    println!("fjall commit of 1, to the OS: {:.1} us", per_op(start, COMMITS * 20) / 1e3);
}
