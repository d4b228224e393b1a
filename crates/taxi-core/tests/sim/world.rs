//! The simulated services' shared state, and the request queue through which
//! every DynamoDB and search request travels.
//!
//! A request is submitted when the caller's future first reaches it and lands
//! when the scheduler picks it, in any order among the requests in flight, as
//! requests of concurrent clients do. A caller that is killed (a Lambda
//! timeout, a crash) is dropped, but what it had already sent still lands
//! later: "a timed-out invocation's writes landing late".

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use taxi_core::closer::{CloserState, DeadLetter};
use taxi_core::pack::LogRef;
use taxi_core::seq::SeqNum;
use taxi_core::shard::{ShardId, ShardState};
use taxi_core::store::StoreError;
use taxi_core::time::WallTime;
use taxi_core::window::{PaneStart, WindowStart};

/// A batch item (pk `B#<shard>`, sk `<digest>#<part>`), its parts together.
#[derive(Clone, Debug)]
pub struct ItemEntry {
    pub parts: Vec<Vec<u8>>,
    /// DynamoDB TTL attribute: epoch seconds, compared with the wall clock.
    pub expires_at: i64,
}

/// A seal item: pk `P#<pane>#<shard>`, sk the sequence number that sealed it.
#[derive(Clone, Debug)]
pub struct SealEntry {
    pub refs: Vec<LogRef>,
    pub expires_at: i64,
}

#[derive(Clone, Debug)]
pub struct MarkerItem {
    pub seq: SeqNum,
    pub expires_at: i64,
}

/// The closer state item `C` / `STATE`.
#[derive(Clone, Debug, Default)]
pub struct CloserItem {
    pub state: CloserState,
    pub lease: Option<(String, WallTime)>,
}

/// The DynamoDB table.
#[derive(Debug, Default)]
pub struct Tables {
    /// (shard, digest) -> batch item.
    pub batch_items: BTreeMap<(ShardId, u128), ItemEntry>,
    /// Each pane's seals in sort key order.
    pub seals: BTreeMap<(PaneStart, ShardId), BTreeMap<SeqNum, SealEntry>>,
    pub shard_states: BTreeMap<ShardId, ShardState>,
    pub markers: BTreeMap<(WindowStart, ShardId), MarkerItem>,
    pub closer: CloserItem,
    pub dead_letters: Vec<DeadLetter>,
}

/// One document in the search index.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexedDocument {
    pub source: serde_json::Value,
    pub version: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Index {
    pub documents: BTreeMap<(String, String), IndexedDocument>,
}

/// What a landing request works on.
pub struct Env<'a> {
    pub tables: &'a mut Tables,
    pub index: &'a mut Index,
    pub now: WallTime,
    /// A random number for the request's own faults (per-item 429s).
    pub roll: u64,
}

/// How the scheduler lets one request land.
#[derive(Clone, Debug)]
pub enum Landing {
    Apply,
    /// The service refused it without applying it (throttling, an outage).
    Fail(StoreError),
}

type Apply = Box<dyn FnOnce(&mut Env<'_>, Landing) -> Box<dyn Any + Send> + Send>;
type Slot = Arc<Mutex<Option<Box<dyn Any + Send>>>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Dynamo,
    Search,
}

struct Pending {
    /// A request held up in the network or a server queue lands only after this.
    not_before: WallTime,
    label: &'static str,
    service: Service,
    apply: Apply,
    reply: Slot,
}

/// Everything the simulated services hold, shared by every actor.
#[derive(Default)]
pub struct Shared {
    clock_ms: AtomicI64,
    pub tables: Mutex<Tables>,
    pub index: Mutex<Index>,
    /// What `ListShards` answers now.
    pub stream_shards: Mutex<Vec<taxi_core::shard::StreamShard>>,
    /// The last sequence number written to each shard (what `GetRecords` would reach).
    pub stream_tips: Mutex<BTreeMap<ShardId, SeqNum>>,
    pending: Mutex<Vec<Pending>>,
    /// Requests submitted per actor, for killing an actor after its n-th.
    submitted: Mutex<BTreeMap<u64, usize>>,
    /// Wakers of the futures waiting on a request or the clock: woken before
    /// every poll, so combinators inside the actors (`buffer_unordered`) poll them again.
    waiting: Mutex<Vec<Waker>>,
    /// When the futures waiting on the clock (since the last poll) wake.
    sleeping_until: Mutex<Vec<WallTime>>,
    /// The services' own randomness (which `_bulk` is held up), from the run's seed.
    rng: Mutex<Option<fastrand::Rng>>,
}

impl Shared {
    pub fn new(start: WallTime, seed: u64) -> Arc<Shared> {
        let shared = Shared { rng: Mutex::new(Some(fastrand::Rng::with_seed(seed ^ 0x5e4c))), ..Shared::default() };
        shared.clock_ms.store(start.0, Ordering::SeqCst);
        Arc::new(shared)
    }

    pub fn now(&self) -> WallTime {
        WallTime(self.clock_ms.load(Ordering::SeqCst))
    }

    pub fn advance(&self, ms: i64) {
        self.clock_ms.fetch_add(ms.max(0), Ordering::SeqCst);
    }

    pub fn set_clock(&self, at: WallTime) {
        self.clock_ms.fetch_max(at.0, Ordering::SeqCst);
    }

    pub fn chance_roll(&self) -> u64 {
        self.rng.lock().unwrap().as_mut().expect("seeded").u64(..)
    }

    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap().len()
    }

    /// When the next held-up request may land.
    pub fn next_landing(&self) -> Option<WallTime> {
        self.pending.lock().unwrap().iter().map(|p| p.not_before).min()
    }

    fn wait(&self, waker: &Waker) {
        self.waiting.lock().unwrap().push(waker.clone());
    }

    /// Wakes every waiting future, so that the next poll reaches it.
    pub fn wake_all(&self) {
        self.sleeping_until.lock().unwrap().clear();
        for waker in std::mem::take(&mut *self.waiting.lock().unwrap()) {
            waker.wake();
        }
    }

    /// The earliest wake-up of a future waiting on the clock.
    pub fn next_wake(&self) -> Option<WallTime> {
        self.sleeping_until.lock().unwrap().iter().copied().min()
    }

    pub fn submitted_by(&self, actor: u64) -> usize {
        self.submitted.lock().unwrap().get(&actor).copied().unwrap_or(0)
    }

    /// Sends a request; the returned future resolves when it lands.
    pub fn call<T: Send + 'static>(
        &self,
        actor: u64,
        service: Service,
        label: &'static str,
        delay_ms: i64,
        f: impl FnOnce(&mut Env<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Reply<'_, T> {
        let reply: Slot = Arc::default();
        let apply: Apply = Box::new(move |env, landing| {
            let result = match landing {
                Landing::Apply => f(env),
                Landing::Fail(e) => Err(e),
            };
            Box::new(result)
        });
        let not_before = WallTime(self.now().0 + delay_ms);
        self.pending.lock().unwrap().push(Pending { not_before, label, service, apply, reply: reply.clone() });
        *self.submitted.lock().unwrap().entry(actor).or_default() += 1;
        Reply { slot: reply, shared: self, _t: std::marker::PhantomData }
    }

    /// Lands the `pick`-th request in flight that may land now (modulo their number); returns its label and service.
    pub fn land(&self, pick: usize, landing: impl FnOnce(Service) -> Landing, roll: u64) -> Option<(&'static str, Service)> {
        let now = self.now();
        let request = {
            let mut pending = self.pending.lock().unwrap();
            let ready: Vec<usize> = (0..pending.len()).filter(|&i| pending[i].not_before <= now).collect();
            if ready.is_empty() {
                return None;
            }
            pending.swap_remove(ready[pick % ready.len()])
        };
        let landing = landing(request.service);
        let mut tables = self.tables.lock().unwrap();
        let mut index = self.index.lock().unwrap();
        let mut env = Env { tables: &mut tables, index: &mut index, now: self.now(), roll };
        let result = (request.apply)(&mut env, landing);
        *request.reply.lock().unwrap() = Some(result);
        Some((request.label, request.service))
    }
}

/// A request's answer, once it has landed.
pub struct Reply<'a, T> {
    slot: Slot,
    shared: &'a Shared,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: 'static> Future for Reply<'_, T> {
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.slot.lock().unwrap().take() {
            Some(answer) => Poll::Ready(*answer.downcast::<Result<T, StoreError>>().expect("reply of the requested type")),
            None => {
                self.shared.wait(cx.waker());
                Poll::Pending
            }
        }
    }
}

/// Resolves once the simulated clock reaches `until`.
pub struct Sleep {
    pub shared: Arc<Shared>,
    pub until: WallTime,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.now() >= self.until {
            Poll::Ready(())
        } else {
            self.shared.sleeping_until.lock().unwrap().push(self.until);
            self.shared.wait(cx.waker());
            Poll::Pending
        }
    }
}
