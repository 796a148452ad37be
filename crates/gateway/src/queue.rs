//! Strict-priority FIFO queue of waiting requests.
//!
//! A plain data structure: four FIFOs, one per priority. Each entry carries
//! the channel its waiter listens on, so the waiter exists *before* the entry
//! is visible to the dispatcher (the old system registered waiters after
//! enqueueing and lost requests). Entries are removed by the dispatcher when
//! granted, by the waiter on timeout or cancellation, or by the full policy
//! when dropped — and every removal answers the waiter or is done by it.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Request priority, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// 1 — served before everything else.
    Urgent,
    /// 2
    High,
    /// 3 — the default.
    Normal,
    /// 4 — waits only `low_priority_timeout`, then degrades.
    Low,
}

impl Priority {
    /// All priorities, most urgent first.
    pub const ALL: [Priority; 4] = [
        Priority::Urgent,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// Index 0..4 (urgent = 0).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Label used in metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;
    /// Accepts the names (any case) and the numbers 1–4 (1 = urgent).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "urgent" | "1" => Ok(Priority::Urgent),
            "high" | "2" => Ok(Priority::High),
            "normal" | "3" => Ok(Priority::Normal),
            "low" | "4" => Ok(Priority::Low),
            other => Err(format!(
                "unknown priority {other:?}; use urgent, high, normal or low (or 1-4)"
            )),
        }
    }
}

/// What a waiter receives from the dispatcher or the full policy.
#[derive(Debug)]
pub(crate) enum Wake<P> {
    /// A token and a slot are reserved for this request.
    Granted(P),
    /// Evicted by `drop_lowest`; answer 503 at once.
    Dropped,
}

pub(crate) struct Entry<P> {
    pub id: u64,
    pub priority: Priority,
    pub enqueued_at: Instant,
    pub tx: oneshot::Sender<Wake<P>>,
}

/// Four FIFOs served strictly by priority.
pub(crate) struct PriorityQueue<P> {
    lanes: [VecDeque<Entry<P>>; 4],
    len: usize,
}

impl<P> PriorityQueue<P> {
    pub fn new() -> Self {
        PriorityQueue {
            lanes: Default::default(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn depth_by_priority(&self) -> [usize; 4] {
        [
            self.lanes[0].len(),
            self.lanes[1].len(),
            self.lanes[2].len(),
            self.lanes[3].len(),
        ]
    }

    pub fn push(&mut self, entry: Entry<P>) {
        self.lanes[entry.priority.index()].push_back(entry);
        self.len += 1;
    }

    /// Put an entry back at the head of its priority (it was popped but
    /// could not be served).
    pub fn push_front(&mut self, entry: Entry<P>) {
        self.lanes[entry.priority.index()].push_front(entry);
        self.len += 1;
    }

    /// Highest-priority, oldest entry.
    pub fn pop(&mut self) -> Option<Entry<P>> {
        let entry = self.lanes.iter_mut().find_map(|l| l.pop_front())?;
        self.len -= 1;
        Some(entry)
    }

    /// Remove a specific entry (waiter timed out or went away). Returns
    /// whether it was still queued.
    pub fn remove(&mut self, id: u64, priority: Priority) -> bool {
        let lane = &mut self.lanes[priority.index()];
        match lane.iter().position(|e| e.id == id) {
            Some(pos) => {
                lane.remove(pos);
                self.len -= 1;
                true
            }
            None => false,
        }
    }

    /// For `drop_lowest`: remove the newest entry of the lowest non-empty
    /// priority if it is strictly less urgent than `newcomer`.
    pub fn evict_lower_than(&mut self, newcomer: Priority) -> Option<Entry<P>> {
        let lane = self.lanes.iter_mut().rev().find(|l| !l.is_empty())?;
        if lane.back().is_some_and(|e| e.priority > newcomer) {
            self.len -= 1;
            lane.pop_back()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, priority: Priority) -> Entry<()> {
        let (tx, _rx) = oneshot::channel();
        Entry {
            id,
            priority,
            enqueued_at: Instant::now(),
            tx,
        }
    }

    #[test]
    fn strict_priority_then_fifo() {
        let mut q = PriorityQueue::new();
        q.push(entry(1, Priority::Low));
        q.push(entry(2, Priority::Normal));
        q.push(entry(3, Priority::Urgent));
        q.push(entry(4, Priority::Normal));
        let order: Vec<u64> = std::iter::from_fn(|| q.pop().map(|e| e.id)).collect();
        assert_eq!(order, vec![3, 2, 4, 1]);
        assert!(q.is_empty());
    }

    #[test]
    fn eviction_only_of_strictly_lower_priority() {
        let mut q = PriorityQueue::new();
        q.push(entry(1, Priority::Normal));
        q.push(entry(2, Priority::Low));
        q.push(entry(3, Priority::Low));
        assert_eq!(q.evict_lower_than(Priority::High).map(|e| e.id), Some(3));
        assert!(q.evict_lower_than(Priority::Low).is_none());
        assert!(q.remove(2, Priority::Low));
        assert!(!q.remove(2, Priority::Low));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!("URGENT".parse::<Priority>(), Ok(Priority::Urgent));
        assert_eq!("4".parse::<Priority>(), Ok(Priority::Low));
        assert!("asap".parse::<Priority>().is_err());
    }
}
