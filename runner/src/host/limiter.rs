//! The per-store resource limiter: it enforces the tenant's memory, table and
//! instance limits and remembers which one a guest ran into, so the request's
//! error can name it.

use crate::limits::{self, Limit, Limits};

#[derive(Debug)]
pub struct Limiter {
    max_memory: usize,
    max_table_elements: usize,
    max_instances: usize,
    max_tables: usize,
    max_memories: usize,
    /// The limit a growth request ran into, if any.
    pub hit: Option<Limit>,
    /// Bytes of linear memory the store's memories were allowed to reach,
    /// together: what a kept instance holds (`max-reused-memory`).
    pub memory: usize,
}

impl Limiter {
    pub fn new(limits: &Limits) -> Self {
        Self {
            max_memory: limits::bytes(limits.max_memory),
            max_table_elements: limits.max_table_elements,
            max_instances: limits.max_instances,
            max_tables: limits.max_tables,
            max_memories: limits.max_memories,
            hit: None,
            memory: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Refusing makes `memory.grow` return -1, as the wasm spec allows;
        // a guest may handle it, and most abort, which traps.
        if desired > self.max_memory {
            self.hit = Some(Limit::Memory);
            return Ok(false);
        }
        // A new memory comes with `current` 0. A growth allowed here that
        // then fails (past the pool's slot) stays counted: that can only
        // drop a kept instance early, never keep a large one.
        self.memory = self.memory.saturating_add(desired.saturating_sub(current));
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            self.hit = Some(Limit::TableElements);
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.max_instances
    }

    fn tables(&self) -> usize {
        self.max_tables
    }

    fn memories(&self) -> usize {
        self.max_memories
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter;

    use super::Limiter;
    use crate::limits::{Limit, Limits};

    #[test]
    fn growth_past_a_cap_is_refused_and_remembered() {
        let limits = Limits {
            max_memory: bytesize::ByteSize::mib(1),
            max_table_elements: 100,
            ..Limits::default()
        };
        let mut l = Limiter::new(&limits);
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        assert!(l.memory_growing(0, 1 << 16, None).unwrap());
        assert_eq!(l.memory, (1 << 20) + (1 << 16), "two memories, together");
        assert!(l.table_growing(0, 100, None).unwrap());
        assert_eq!(l.hit, None);
        assert!(!l.table_growing(100, 101, None).unwrap());
        assert_eq!(l.hit, Some(Limit::TableElements));
        assert!(!l.memory_growing(1 << 20, (1 << 20) + 65536, None).unwrap());
        assert_eq!(l.hit, Some(Limit::Memory));
        assert_eq!(
            l.memory,
            (1 << 20) + (1 << 16),
            "a refused growth is not counted"
        );
        assert_eq!((l.instances(), l.tables(), l.memories()), (32, 32, 2));
    }
}
