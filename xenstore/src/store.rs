//! The node tree and every message type xenstored answers for a guest.
//!
//! One [`Store`] holds the tree, one connection per domain (dom0's local
//! one always there, a domU's from INTRODUCE to RELEASE) with its watches,
//! transactions and queued output, and the quotas. [`Store::handle`]
//! answers one message (reply first, then the watch events it caused, in
//! each connection's output queue); [`Store::call`] is the same without
//! framing, dom0's own way in.
//!
//! Transactions work on a copy of the tree. Every node a transaction reads
//! or changes is remembered with the generation it had; a commit fails
//! with `EAGAIN` when any of them changed in the store since, and otherwise
//! copies the nodes it changed into the store and fires their watches.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use dom0_abi::xenstore::{XENSTORE_PAYLOAD_MAX, XsType, XsdSockmsg};

use crate::DomId;
use crate::path::{self, INTRODUCE_DOMAIN, RELEASE_DOMAIN};
use crate::perms::{self, Access, Perm, Perms};
use crate::wire::{self, XsError, args, decimal, one_arg};

/// What the store needs from the hypervisor (dom0 implements it with
/// foreign mappings and event channels; tests with a recording fake).
pub trait Host {
    /// Maps `domid`'s store ring (`mfn`) and binds its unbound `port`
    /// interdomain; called by INTRODUCE before the connection exists. An
    /// error is the INTRODUCE's answer.
    fn introduce(&mut self, domid: DomId, mfn: u64, port: u32) -> Result<(), XsError>;
    /// Unbinds and unmaps what [`Host::introduce`] set up for `domid`.
    fn release(&mut self, domid: DomId);
}

/// Per-domain limits for unprivileged domains (xenstored's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Nodes a domain may own (`ENOSPC` beyond).
    pub nodes: u32,
    /// Watches per connection (`E2BIG` beyond).
    pub watches: usize,
    /// Size of one node's record: 24 bytes of header, 8 per permission
    /// entry, the value and the children's names with their NULs; a write
    /// by a domain making it 2048 or more is `ENOSPC`.
    pub entry_size: usize,
    /// Record bytes a domain may hold: the nodes it owns plus every node
    /// copy in its open transactions (`ENOMEM` beyond). Not a 4.17
    /// xenstored default: it keeps dom0's heap safe from one domain.
    pub memory: usize,
    /// Open transactions per connection (`ENOSPC` beyond).
    pub transactions: usize,
    /// Permission entries a domain may set on a node (`ENOSPC` beyond).
    pub perms: usize,
}

impl Default for Quota {
    fn default() -> Quota {
        Quota {
            nodes: 1000,
            watches: 128,
            entry_size: 2048,
            memory: 256 * 1024,
            transactions: 10,
            perms: 5,
        }
    }
}

/// Bytes a transaction's record of one used node costs, beyond its path.
const SEEN_BYTES: usize = 32;

/// Bytes of watch events a connection may have waiting; more are dropped
/// (a guest that does not read its ring cannot make dom0 run out of heap).
pub const EVENT_QUEUE_MAX: usize = 64 * 1024;

#[derive(Clone, Debug)]
struct Node {
    value: Vec<u8>,
    perms: Perms,
    children: Vec<String>,
    generation: u64,
}

impl Node {
    /// xenstored's record size for the entry quota.
    fn record_size(&self) -> usize {
        24 + 8 * self.perms.len()
            + self.value.len()
            + self.children.iter().map(|c| c.len() + 1).sum::<usize>()
    }
}

/// Nodes by absolute path, with the number and bytes each domain owns.
#[derive(Clone, Debug, Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
    owned: BTreeMap<DomId, Usage>,
}

/// What a domain owns: nodes and their record bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Usage {
    nodes: i64,
    bytes: i64,
}

/// Adds `node` (`sign` 1) to its owner's usage, or takes it away (-1).
fn account(usage: &mut BTreeMap<DomId, Usage>, node: &Node, sign: i64) {
    let entry = usage.entry(perms::owner(&node.perms)).or_default();
    entry.nodes += sign;
    entry.bytes += sign * i64::try_from(node.record_size()).unwrap_or(i64::MAX / 4);
}

impl Tree {
    fn usage(&self, domid: DomId) -> Usage {
        self.owned.get(&domid).copied().unwrap_or_default()
    }

    /// Sets or removes one node, keeping the ownership counts.
    fn set(&mut self, path: &str, node: Option<Node>) {
        if let Some(node) = &node {
            account(&mut self.owned, node, 1);
        }
        let old = match node {
            Some(node) => self.nodes.insert(String::from(path), node),
            None => self.nodes.remove(path),
        };
        if let Some(old) = old {
            account(&mut self.owned, &old, -1);
        }
    }
}

/// A change that fires watches.
#[derive(Clone, Debug)]
struct Change {
    path: String,
    /// The node's permissions (before and after a permission change).
    perms: Perms,
    old_perms: Option<Perms>,
    /// A removal: watches below `path` fire too, with their own path.
    removal: bool,
}

#[derive(Clone, Debug)]
struct Watch {
    /// Absolute (or special) path.
    path: String,
    token: String,
    /// Sent relative: events are reported relative to the home.
    relative: bool,
}

/// A transaction's view: the nodes it changed (`None`: removed) over the
/// store as it is now, as xenstored's transactions do, and what it used.
#[derive(Debug, Default)]
struct Overlay {
    nodes: BTreeMap<String, Option<Node>>,
    /// Generation (`None`: absent) of each node the transaction used, as it
    /// was in the store when the transaction first used it.
    seen: BTreeMap<String, Option<u64>>,
    /// Changes to each domain's usage against the store's.
    owned: BTreeMap<DomId, Usage>,
    /// Record bytes of the node copies it has written.
    bytes: usize,
}

#[derive(Debug, Default)]
struct Transaction {
    overlay: Overlay,
    changes: Vec<Change>,
}

/// One domain's connection.
#[derive(Debug, Default)]
struct Conn {
    watches: Vec<Watch>,
    /// Bytes of the watches' paths and tokens.
    watch_bytes: usize,
    transactions: BTreeMap<u32, Transaction>,
    next_tx: u32,
    /// Messages waiting for the ring, as bytes.
    out: VecDeque<u8>,
    event_bytes: usize,
    dropped_events: u64,
    /// Bytes of an incomplete request read from the ring.
    input: Vec<u8>,
    broken: bool,
    target: Option<DomId>,
}

/// The store: the tree, the connections and the quotas.
#[derive(Debug)]
pub struct Store {
    tree: Tree,
    generation: u64,
    conns: BTreeMap<DomId, Conn>,
    special: [(&'static str, Perms); 2],
    quota: Quota,
    /// Watch events a request caused, sent after its reply.
    pending: Vec<(DomId, Vec<u8>)>,
    /// Kept between reads so that one allocates nothing: the absolute
    /// path, and the reply (given back by [`Store::handle`] once queued).
    path: String,
    reply: Vec<u8>,
}

impl Default for Store {
    fn default() -> Store {
        Store::new(Quota::default())
    }
}

fn dom0_only() -> Perms {
    alloc::vec![Perm {
        domid: 0,
        access: Access::None
    }]
}

/// The request's transaction and the store state it works on.
struct Work<'a> {
    tree: &'a mut Tree,
    tx: Option<&'a mut Overlay>,
    changes: &'a mut Vec<Change>,
    generation: &'a mut u64,
    quota: &'a Quota,
    from: DomId,
    target: Option<DomId>,
    /// Bytes the caller's other transactions hold.
    others: usize,
}

impl Work<'_> {
    fn unprivileged(&self) -> bool {
        self.from != 0
    }

    fn access(&self, node: &Node) -> Access {
        perms::access(&node.perms, self.from, self.target)
    }

    /// The node at `path` as the request sees it.
    fn get(&self, path: &str) -> Option<&Node> {
        match self.tx.as_ref().and_then(|o| o.nodes.get(path)) {
            Some(changed) => changed.as_ref(),
            None => self.tree.nodes.get(path),
        }
    }

    fn usage(&self, domid: DomId) -> Usage {
        let mut usage = self.tree.usage(domid);
        if let Some(delta) = self.tx.as_ref().and_then(|o| o.owned.get(&domid)) {
            usage.nodes += delta.nodes;
            usage.bytes += delta.bytes;
        }
        usage
    }

    /// Sets or removes a node (in the transaction's view, if any).
    fn set(&mut self, path: &str, node: Option<Node>) {
        let Some(overlay) = self.tx.as_deref_mut() else {
            self.tree.set(path, node);
            return;
        };
        let old = match overlay.nodes.get(path) {
            Some(changed) => changed.clone(),
            None => self.tree.nodes.get(path).cloned(),
        };
        if let Some(old) = &old {
            account(&mut overlay.owned, old, -1);
        }
        if let Some(new) = &node {
            account(&mut overlay.owned, new, 1);
            overlay.bytes += new.record_size();
        }
        overlay.nodes.insert(String::from(path), node);
    }

    /// `path` and every node below it, parents first.
    fn subtree(&self, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = alloc::vec![String::from(path)];
        while let Some(p) = todo.pop() {
            if let Some(node) = self.get(&p) {
                for child in &node.children {
                    todo.push(if p == "/" {
                        format!("/{child}")
                    } else {
                        format!("{p}/{child}")
                    });
                }
                out.push(p);
            }
        }
        out
    }

    /// The nearest existing ancestor of a missing `path`.
    fn nearest(&self, path: &str) -> Option<&Node> {
        let mut p = path;
        loop {
            p = path::parent(p);
            if let Some(node) = self.get(p) {
                return Some(node);
            }
            if p == "/" {
                return None;
            }
        }
    }

    /// Remembers `path`'s generation in the store the first time a
    /// transaction uses it; the record counts against the caller's memory
    /// quota (`ENOMEM`).
    fn note(&mut self, path: &str) -> Result<(), XsError> {
        let fresh = self
            .tx
            .as_ref()
            .is_some_and(|o| !o.seen.contains_key(path) && !o.nodes.contains_key(path));
        if fresh && self.unprivileged() {
            self.memory_check(path.len() + SEEN_BYTES)?;
        }
        self.record(path);
        Ok(())
    }

    /// [`Work::note`] without the quota (its room was checked before).
    fn record(&mut self, path: &str) {
        if let Some(overlay) = self.tx.as_deref_mut()
            && !overlay.seen.contains_key(path)
            && !overlay.nodes.contains_key(path)
        {
            let generation = self.tree.nodes.get(path).map(|n| n.generation);
            overlay.seen.insert(String::from(path), generation);
            overlay.bytes += path.len() + SEEN_BYTES;
        }
    }

    fn bump(&mut self) -> u64 {
        *self.generation += 1;
        *self.generation
    }

    /// Writes a node (the caller noted it first), within the entry size
    /// quota.
    fn store(&mut self, path: &str, node: Node) -> Result<(), XsError> {
        if self.unprivileged() {
            if node.record_size() >= self.quota.entry_size {
                return Err(XsError::Enospc);
            }
            self.memory_check(node.record_size())?;
        }
        self.put(path, node);
        Ok(())
    }

    /// `ENOMEM` if the caller would hold more than its memory quota with
    /// `more` bytes of records added.
    fn memory_check(&self, more: usize) -> Result<(), XsError> {
        let owned = usize::try_from(self.usage(self.from).bytes).unwrap_or(0);
        let copies = self.tx.as_ref().map_or(0, |o| o.bytes);
        if owned + copies + self.others + more > self.quota.memory {
            return Err(XsError::Enomem);
        }
        Ok(())
    }

    /// Writes a node (the caller noted it first).
    fn put(&mut self, path: &str, mut node: Node) {
        node.generation = self.bump();
        self.set(path, Some(node));
    }

    /// The node at `path` if the caller has `need` to it. A missing node
    /// is `ENOENT` if the caller could have `need` to its nearest ancestor
    /// and `EACCES` otherwise, so that errors never tell whether something
    /// the caller cannot see exists.
    fn lookup(&mut self, path: &str, need: fn(Access) -> bool) -> Result<Node, XsError> {
        self.find(path, need).cloned()
    }

    /// [`Work::lookup`] without the copy.
    fn find(&mut self, path: &str, need: fn(Access) -> bool) -> Result<&Node, XsError> {
        self.note(path)?;
        match self.get(path) {
            Some(node) if need(self.access(node)) => Ok(node),
            Some(_) => Err(XsError::Eacces),
            None => match self.nearest(path) {
                Some(node) if !need(self.access(node)) => Err(XsError::Eacces),
                _ => Err(XsError::Enoent),
            },
        }
    }

    /// The node's value, in `out` (cleared first).
    fn read(&mut self, path: &str, mut out: Vec<u8>) -> Result<Vec<u8>, XsError> {
        out.clear();
        out.extend_from_slice(&self.find(path, Access::reads)?.value);
        Ok(out)
    }

    fn directory(&mut self, path: &str) -> Result<Node, XsError> {
        self.lookup(path, Access::reads)
    }

    /// Creates `path` and its missing ancestors (each inheriting its
    /// parent's permissions, owned by the creator if it is a domU).
    fn create(&mut self, path: &str, value: Vec<u8>) -> Result<(), XsError> {
        let mut missing = alloc::vec![String::from(path)];
        let mut p = path;
        while p != "/" {
            p = path::parent(p);
            if self.get(p).is_some() {
                break;
            }
            missing.push(String::from(p));
        }
        let needed = u32::try_from(missing.len()).unwrap_or(u32::MAX);
        if self.unprivileged() {
            if self.usage(self.from).nodes + i64::from(needed) > i64::from(self.quota.nodes) {
                return Err(XsError::Enospc);
            }
            // The only records that grow: the existing parent's child
            // list and the new node's value (new parents hold one name).
            let top = missing.last().map_or(path, String::as_str);
            let parent = self.get(path::parent(top)).ok_or(XsError::Enoent)?;
            let grown = parent.record_size() + path::base(top).len() + 1;
            let new = 24 + 8 * parent.perms.len() + value.len();
            if grown >= self.quota.entry_size || new >= self.quota.entry_size {
                return Err(XsError::Enospc);
            }
            let records =
                missing.len() * (32 + 8 * parent.perms.len() + 2 * SEEN_BYTES + 2 * path.len());
            self.memory_check(grown + new + records)?;
        }
        self.create_all(&missing, value);
        Ok(())
    }

    /// Creates `missing` (deepest first) once [`Work::create`] has checked
    /// that nothing can fail.
    fn create_all(&mut self, missing: &[String], value: Vec<u8>) {
        let mut value = Some(value);
        for p in missing.iter().rev() {
            let parent_path = path::parent(p);
            self.record(parent_path);
            let Some(mut parent) = self.get(parent_path).cloned() else {
                return;
            };
            let mut perms = parent.perms.clone();
            if let (true, Some(owner)) = (self.unprivileged(), perms.first_mut()) {
                owner.domid = self.from;
            }
            parent.children.push(String::from(path::base(p)));
            self.put(parent_path, parent);
            self.record(p);
            let value = if p == &missing[0] {
                value.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            let node = Node {
                value,
                perms,
                children: Vec::new(),
                generation: 0,
            };
            self.put(p, node);
        }
    }

    fn changed(&mut self, path: &str, perms: Perms, old_perms: Option<Perms>, removal: bool) {
        self.changes.push(Change {
            path: String::from(path),
            perms,
            old_perms,
            removal,
        });
    }

    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), XsError> {
        match self.lookup(path, Access::writes) {
            Ok(mut node) => {
                node.value = Vec::from(value);
                let perms = node.perms.clone();
                self.store(path, node)?;
                self.changed(path, perms, None, false);
            }
            Err(XsError::Enoent) => {
                self.create(path, Vec::from(value))?;
                let perms = self.get(path).map(|n| n.perms.clone()).unwrap_or_default();
                self.changed(path, perms, None, false);
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn mkdir(&mut self, path: &str) -> Result<(), XsError> {
        match self.lookup(path, Access::writes) {
            Ok(_) => Ok(()),
            Err(XsError::Enoent) => {
                self.create(path, Vec::new())?;
                let perms = self.get(path).map(|n| n.perms.clone()).unwrap_or_default();
                self.changed(path, perms, None, false);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn rm(&mut self, path: &str) -> Result<(), XsError> {
        if path == "/" {
            return Err(XsError::Einval);
        }
        let node = match self.lookup(path, Access::writes) {
            Ok(node) => node,
            Err(XsError::Enoent) if self.get(path::parent(path)).is_some() => {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let parent_path = path::parent(path);
        self.note(parent_path)?;
        for p in self.subtree(path) {
            self.record(&p);
            self.set(&p, None);
        }
        if let Some(mut parent) = self.get(parent_path).cloned() {
            let name = path::base(path);
            parent.children.retain(|c| c != name);
            self.put(parent_path, parent);
        }
        self.changed(path, node.perms, None, true);
        Ok(())
    }

    fn set_perms(&mut self, path: &str, new: Perms) -> Result<(), XsError> {
        let mut node = self.lookup(path, Access::writes)?;
        if !perms::owns(&node.perms, self.from, self.target) {
            return Err(XsError::Eacces);
        }
        if self.unprivileged() && perms::owner(&new) != perms::owner(&node.perms) {
            return Err(XsError::Eperm);
        }
        let old = core::mem::replace(&mut node.perms, new.clone());
        self.store(path, node)?;
        self.changed(path, new, Some(old), false);
        Ok(())
    }
}

/// The `DIRECTORY_PART` reply: the generation, then the children list
/// from byte `offset`, cut after the last whole name that fits, with an
/// empty string after the last name of the list.
fn directory_part(node: &Node, offset: usize) -> Result<Vec<u8>, XsError> {
    let mut list = Vec::new();
    for child in &node.children {
        list.extend_from_slice(child.as_bytes());
        list.push(0);
    }
    let rest = list.get(offset..).ok_or(XsError::Einval)?;
    let mut out = Vec::from(format!("{}", node.generation).as_bytes());
    out.push(0);
    let room = XENSTORE_PAYLOAD_MAX - out.len() - 1;
    if rest.len() <= room {
        out.extend_from_slice(rest);
        out.push(0);
    } else {
        let cut = rest[..room]
            .iter()
            .rposition(|&b| b == 0)
            .map_or(0, |at| at + 1);
        out.extend_from_slice(&rest[..cut]);
    }
    Ok(out)
}

const OK: &[u8] = b"OK\0";

fn is_privileged_type(ty: XsType) -> bool {
    matches!(
        ty,
        XsType::Control
            | XsType::Introduce
            | XsType::Release
            | XsType::IsDomainIntroduced
            | XsType::Resume
            | XsType::SetTarget
    )
}

fn domid_arg(text: &str) -> Result<DomId, XsError> {
    decimal::<DomId>(text).and_then(|d| {
        if d < 0x7ff0 {
            Ok(d)
        } else {
            Err(XsError::Einval)
        }
    })
}

impl Store {
    /// A store with xenstored's initial tree (`/`, `/tool`,
    /// `/tool/xenstored`, all `n0`) and dom0's connection.
    #[must_use]
    pub fn new(quota: Quota) -> Store {
        let mut store = Store {
            tree: Tree::default(),
            generation: 0,
            conns: BTreeMap::new(),
            special: [
                (INTRODUCE_DOMAIN, dom0_only()),
                (RELEASE_DOMAIN, dom0_only()),
            ],
            quota,
            pending: Vec::new(),
            path: String::new(),
            reply: Vec::new(),
        };
        store.conns.insert(0, Conn::default());
        for (path, children) in [
            ("/", "tool"),
            ("/tool", "xenstored"),
            ("/tool/xenstored", ""),
        ] {
            let node = Node {
                value: Vec::new(),
                perms: dom0_only(),
                children: if children.is_empty() {
                    Vec::new()
                } else {
                    alloc::vec![String::from(children)]
                },
                generation: 0,
            };
            store.tree.set(path, Some(node));
        }
        store
    }

    /// The quotas in force.
    #[must_use]
    pub const fn quota(&self) -> &Quota {
        &self.quota
    }

    /// The store's generation: it grows with every change of a node
    /// (written, removed, its permissions set, a transaction committed),
    /// so a reader can tell that nothing changed since it last looked.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether `domid` has a connection (dom0 always has).
    #[must_use]
    pub fn is_introduced(&self, domid: DomId) -> bool {
        self.conns.contains_key(&domid)
    }

    /// The domains with a connection other than dom0, ascending.
    pub fn domains(&self) -> impl Iterator<Item = DomId> + '_ {
        self.conns.keys().copied().filter(|&d| d != 0)
    }

    /// Nodes `domid` owns.
    #[must_use]
    pub fn owned_nodes(&self, domid: DomId) -> u32 {
        u32::try_from(self.tree.usage(domid).nodes).unwrap_or(0)
    }

    /// Watch events dropped for `domid` because its queue was full.
    #[must_use]
    pub fn dropped_events(&self, domid: DomId) -> u64 {
        self.conns.get(&domid).map_or(0, |c| c.dropped_events)
    }

    /// Answers one message from `from`'s connection: the reply, then the
    /// watch events it caused, go to the output queues. Ignored when
    /// `from` has no connection.
    pub fn handle(
        &mut self,
        host: &mut impl Host,
        from: DomId,
        header: &XsdSockmsg,
        payload: &[u8],
    ) {
        if !self.conns.contains_key(&from) {
            return;
        }
        let reply = match self.answer(host, from, header.ty, header.tx_id, payload) {
            Ok(body) if body.len() > XENSTORE_PAYLOAD_MAX => Err(XsError::E2big),
            Ok(body) => XsType::from_number(u64::from(header.ty))
                .map(|ty| (ty, body))
                .ok_or(XsError::Enosys),
            Err(e) => Err(e),
        };
        if let Some(conn) = self.conns.get_mut(&from) {
            match reply {
                Ok((ty, body)) => {
                    wire::queue_message(&mut conn.out, ty, header.req_id, header.tx_id, &body);
                    self.reply = body;
                }
                Err(e) => conn.out.extend(wire::error_reply(header, e)),
            }
        }
        self.flush_events();
    }

    /// Answers one request without framing: the reply payload or the
    /// error. Watch events wait in the output queues
    /// ([`Store::take_output`]).
    pub fn call(
        &mut self,
        host: &mut impl Host,
        from: DomId,
        ty: u32,
        tx_id: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, XsError> {
        let result = self.answer(host, from, ty, tx_id, payload);
        self.flush_events();
        result
    }

    /// [`Store::call`] leaving the events it causes pending.
    fn answer(
        &mut self,
        host: &mut impl Host,
        from: DomId,
        ty: u32,
        tx_id: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, XsError> {
        let result = self.dispatch(host, from, ty, tx_id, payload);
        if result.is_err() {
            self.pending.clear();
        }
        result
    }

    fn dispatch(
        &mut self,
        host: &mut impl Host,
        from: DomId,
        ty: u32,
        tx_id: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, XsError> {
        let ty = match XsType::from_number(u64::from(ty)) {
            Some(XsType::WatchEvent | XsType::Error) | None => return Err(XsError::Enosys),
            Some(ty) => ty,
        };
        if is_privileged_type(ty) && from != 0 {
            return Err(XsError::Eacces);
        }
        let conn = self.conns.get(&from).ok_or(XsError::Einval)?;
        let tx = match ty {
            XsType::Watch | XsType::Unwatch => None,
            _ if tx_id == 0 => None,
            _ if conn.transactions.contains_key(&tx_id) => Some(tx_id),
            _ => return Err(XsError::Enoent),
        };
        match ty {
            XsType::Read => {
                let mut full = core::mem::take(&mut self.path);
                let out = core::mem::take(&mut self.reply);
                let value = path::canonical_into(from, one_arg(payload)?, &mut full)
                    .and_then(|()| self.tree_op(from, tx, |w| w.read(&full, out)));
                self.path = full;
                value
            }
            XsType::Directory => self.tree_op(from, tx, |w| {
                let node = w.directory(&path::canonical(from, one_arg(payload)?)?)?;
                let mut out = Vec::new();
                for child in &node.children {
                    out.extend_from_slice(child.as_bytes());
                    out.push(0);
                }
                Ok(out)
            }),
            XsType::DirectoryPart => self.tree_op(from, tx, |w| {
                let [p, offset] = args::<2>(payload)?;
                let node = w.directory(&path::canonical(from, p)?)?;
                directory_part(&node, decimal(offset)?)
            }),
            XsType::GetPerms => {
                let p = one_arg(payload)?;
                let perms = match self.special.iter().find(|(name, _)| *name == p) {
                    Some((_, perms)) => perms.clone(),
                    None => self.tree_op(from, tx, |w| {
                        Ok(w.directory(&path::canonical(from, p)?)?.perms)
                    })?,
                };
                let mut out = Vec::new();
                for perm in perms {
                    out.extend_from_slice(perm.text().as_bytes());
                    out.push(0);
                }
                Ok(out)
            }
            XsType::Write => {
                let nul = payload
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(XsError::Einval)?;
                let p = core::str::from_utf8(&payload[..nul]).map_err(|_| XsError::Einval)?;
                let value = &payload[nul + 1..];
                self.tree_op(from, tx, |w| w.write(&path::canonical(from, p)?, value))
                    .map(|()| Vec::from(OK))
            }
            XsType::Mkdir => self
                .tree_op(from, tx, |w| {
                    w.mkdir(&path::canonical(from, one_arg(payload)?)?)
                })
                .map(|()| Vec::from(OK)),
            XsType::Rm => self
                .tree_op(from, tx, |w| {
                    w.rm(&path::canonical(from, one_arg(payload)?)?)
                })
                .map(|()| Vec::from(OK)),
            XsType::SetPerms => self.set_perms(from, tx, payload).map(|()| Vec::from(OK)),
            XsType::Watch => self.watch(from, payload).map(|()| Vec::from(OK)),
            XsType::Unwatch => self.unwatch(from, payload).map(|()| Vec::from(OK)),
            XsType::TransactionStart => self.transaction_start(from, tx),
            XsType::TransactionEnd => self
                .transaction_end(from, tx, payload)
                .map(|()| Vec::from(OK)),
            XsType::GetDomainPath => {
                let domid = domid_arg(one_arg(payload)?)?;
                let mut out = Vec::from(path::domain_path(domid).as_bytes());
                out.push(0);
                Ok(out)
            }
            XsType::Introduce => {
                let [domid, mfn, port] = args::<3>(payload)?;
                let (domid, mfn, port) = (
                    domid_arg(domid)?,
                    decimal::<u64>(mfn)?,
                    decimal::<u32>(port)?,
                );
                if port == 0 || i32::try_from(port).is_err() {
                    return Err(XsError::Einval);
                }
                self.introduce(host, domid, mfn, port)
                    .map(|()| Vec::from(OK))
            }
            XsType::Release => {
                let domid = domid_arg(one_arg(payload)?)?;
                self.release(host, domid).map(|()| Vec::from(OK))
            }
            XsType::IsDomainIntroduced => {
                let domid = domid_arg(one_arg(payload)?)?;
                Ok(Vec::from(if self.is_introduced(domid) {
                    &b"T\0"[..]
                } else {
                    b"F\0"
                }))
            }
            XsType::Resume => {
                let domid = domid_arg(one_arg(payload)?)?;
                if domid != 0 && self.is_introduced(domid) {
                    Ok(Vec::from(OK))
                } else {
                    Err(XsError::Enoent)
                }
            }
            XsType::SetTarget => {
                let [domid, target] = args::<2>(payload)?;
                let (domid, target) = (domid_arg(domid)?, domid_arg(target)?);
                if !self.is_introduced(target) {
                    return Err(XsError::Enoent);
                }
                let conn = self
                    .conns
                    .get_mut(&domid)
                    .filter(|_| domid != 0)
                    .ok_or(XsError::Enoent)?;
                conn.target = Some(target);
                Ok(Vec::from(OK))
            }
            XsType::ResetWatches => {
                if let Some(conn) = self.conns.get_mut(&from) {
                    conn.watches.clear();
                    conn.watch_bytes = 0;
                    conn.transactions.clear();
                }
                Ok(Vec::from(OK))
            }
            XsType::Control => Err(XsError::Einval),
            XsType::WatchEvent | XsType::Error => Err(XsError::Enosys),
        }
    }

    /// Runs a tree operation on the store or on transaction `tx`'s copy;
    /// outside a transaction its watches fire at once.
    fn tree_op<R>(
        &mut self,
        from: DomId,
        tx: Option<u32>,
        op: impl FnOnce(&mut Work<'_>) -> Result<R, XsError>,
    ) -> Result<R, XsError> {
        let mut direct = Vec::new();
        let conn = self.conns.get_mut(&from).ok_or(XsError::Einval)?;
        let target = conn.target;
        let held = |t: &Transaction| t.overlay.bytes;
        let all: usize = conn.transactions.values().map(held).sum::<usize>() + conn.watch_bytes;
        let mut work = match tx.and_then(|id| conn.transactions.get_mut(&id)) {
            Some(t) => Work {
                others: all - held(t),
                tree: &mut self.tree,
                tx: Some(&mut t.overlay),
                changes: &mut t.changes,
                generation: &mut self.generation,
                quota: &self.quota,
                from,
                target,
            },
            None => Work {
                others: all,
                tree: &mut self.tree,
                tx: None,
                changes: &mut direct,
                generation: &mut self.generation,
                quota: &self.quota,
                from,
                target,
            },
        };
        let result = op(&mut work)?;
        for change in &direct {
            self.fire(change);
        }
        Ok(result)
    }

    fn set_perms(&mut self, from: DomId, tx: Option<u32>, payload: &[u8]) -> Result<(), XsError> {
        let mut parts = wire::strings(payload);
        let p = parts.next().ok_or(XsError::Einval)?;
        let p = core::str::from_utf8(p).map_err(|_| XsError::Einval)?;
        let texts: Vec<&[u8]> = parts.collect();
        if texts.is_empty() || payload.last() != Some(&0) {
            return Err(XsError::Einval);
        }
        if from != 0 && texts.len() > self.quota.perms {
            return Err(XsError::Enospc);
        }
        let new = texts
            .iter()
            .map(|t| {
                core::str::from_utf8(t)
                    .map_err(|_| XsError::Einval)
                    .and_then(Perm::parse)
            })
            .collect::<Result<Perms, XsError>>()?;
        if let Some((_, perms)) = self.special.iter_mut().find(|(name, _)| *name == p) {
            if from != 0 {
                return Err(XsError::Eacces);
            }
            *perms = new;
            return Ok(());
        }
        self.tree_op(from, tx, |w| w.set_perms(&path::canonical(from, p)?, new))
    }

    fn watch(&mut self, from: DomId, payload: &[u8]) -> Result<(), XsError> {
        let [p, token] = args::<2>(payload)?;
        let relative = !p.starts_with('/') && !path::is_special(p);
        let full = if path::is_special(p) {
            if !path::is_valid(&format!("/{}", &p[1..])) {
                return Err(XsError::Einval);
            }
            String::from(p)
        } else {
            path::canonical(from, p)?
        };
        let quota = self.quota.watches;
        let conn = self.conns.get_mut(&from).ok_or(XsError::Einval)?;
        if conn
            .watches
            .iter()
            .any(|w| w.path == full && w.token == token)
        {
            return Err(XsError::Eexist);
        }
        if from != 0 && conn.watches.len() >= quota {
            return Err(XsError::E2big);
        }
        let cost = full.len() + token.len() + SEEN_BYTES;
        let held = usize::try_from(self.tree.usage(from).bytes).unwrap_or(0)
            + conn
                .transactions
                .values()
                .map(|t| t.overlay.bytes)
                .sum::<usize>()
            + conn.watch_bytes;
        if from != 0 && held + cost > self.quota.memory {
            return Err(XsError::Enomem);
        }
        conn.watch_bytes += cost;
        conn.watches.push(Watch {
            path: full,
            token: String::from(token),
            relative,
        });
        self.queue_event(from, p, token);
        Ok(())
    }

    fn unwatch(&mut self, from: DomId, payload: &[u8]) -> Result<(), XsError> {
        let [p, token] = args::<2>(payload)?;
        let full = if path::is_special(p) {
            String::from(p)
        } else {
            path::canonical(from, p)?
        };
        let conn = self.conns.get_mut(&from).ok_or(XsError::Einval)?;
        let at = conn
            .watches
            .iter()
            .position(|w| w.path == full && w.token == token)
            .ok_or(XsError::Enoent)?;
        let gone = conn.watches.remove(at);
        conn.watch_bytes = conn
            .watch_bytes
            .saturating_sub(gone.path.len() + gone.token.len() + SEEN_BYTES);
        Ok(())
    }

    fn transaction_start(&mut self, from: DomId, tx: Option<u32>) -> Result<Vec<u8>, XsError> {
        if tx.is_some() {
            return Err(XsError::Ebusy);
        }
        let quota = self.quota.transactions;
        let conn = self.conns.get_mut(&from).ok_or(XsError::Einval)?;
        if from != 0 && conn.transactions.len() >= quota {
            return Err(XsError::Enospc);
        }
        let mut id = conn.next_tx;
        loop {
            id = id.wrapping_add(1);
            if id != 0 && !conn.transactions.contains_key(&id) {
                break;
            }
        }
        conn.next_tx = id;
        conn.transactions.insert(id, Transaction::default());
        let mut out = Vec::from(format!("{id}").as_bytes());
        out.push(0);
        Ok(out)
    }

    fn transaction_end(
        &mut self,
        from: DomId,
        tx: Option<u32>,
        payload: &[u8],
    ) -> Result<(), XsError> {
        let commit = match one_arg(payload)? {
            "T" => true,
            "F" => false,
            _ => return Err(XsError::Einval),
        };
        let conn = self.conns.get_mut(&from).ok_or(XsError::Einval)?;
        let t = tx
            .and_then(|id| conn.transactions.remove(&id))
            .ok_or(XsError::Enoent)?;
        if !commit {
            return Ok(());
        }
        let conflict = t
            .overlay
            .seen
            .iter()
            .any(|(p, generation)| self.tree.nodes.get(p).map(|n| n.generation) != *generation);
        if conflict {
            return Err(XsError::Eagain);
        }
        for (p, node) in t.overlay.nodes {
            let node = node.map(|mut n| {
                self.generation += 1;
                n.generation = self.generation;
                n
            });
            self.tree.set(&p, node);
        }
        for change in &t.changes {
            self.fire(change);
        }
        Ok(())
    }

    fn introduce(
        &mut self,
        host: &mut impl Host,
        domid: DomId,
        mfn: u64,
        port: u32,
    ) -> Result<(), XsError> {
        if domid == 0 {
            return Err(XsError::Einval);
        }
        if let Some(conn) = self.conns.get_mut(&domid) {
            conn.input.clear();
            conn.broken = false;
            return host.introduce(domid, mfn, port);
        }
        host.introduce(domid, mfn, port)?;
        self.conns.insert(domid, Conn::default());
        self.fire_special(INTRODUCE_DOMAIN);
        Ok(())
    }

    /// Ends `domid`'s connection (RELEASE, or the domain went away): its
    /// watches and transactions go, the nodes it owns are removed,
    /// permission entries naming it are dropped, and `@releaseDomain`
    /// fires. `ENOENT` if it has no connection.
    pub fn release(&mut self, host: &mut impl Host, domid: DomId) -> Result<(), XsError> {
        if domid == 0 || self.conns.remove(&domid).is_none() {
            return Err(XsError::Enoent);
        }
        host.release(domid);
        let owned: Vec<String> = self
            .tree
            .nodes
            .iter()
            .filter(|(p, n)| perms::owner(&n.perms) == domid && p.as_str() != "/")
            .map(|(p, _)| p.clone())
            .collect();
        for p in owned {
            if self.tree.nodes.contains_key(&p) {
                let mut work = Work {
                    tree: &mut self.tree,
                    tx: None,
                    changes: &mut Vec::new(),
                    generation: &mut self.generation,
                    quota: &self.quota,
                    from: 0,
                    target: None,
                    others: 0,
                };
                work.rm(&p)?;
            }
        }
        for node in self.tree.nodes.values_mut() {
            if node.perms.iter().skip(1).any(|p| p.domid == domid) {
                let owner = node.perms.first().copied();
                node.perms.retain(|p| p.domid != domid);
                if let Some(owner) = owner.filter(|o| o.domid == domid) {
                    node.perms.insert(0, owner);
                }
            }
        }
        for conn in self.conns.values_mut() {
            if conn.target == Some(domid) {
                conn.target = None;
            }
        }
        self.fire_special(RELEASE_DOMAIN);
        self.flush_events();
        Ok(())
    }

    /// Queues the events a change fires.
    fn fire(&mut self, change: &Change) {
        let mut events = Vec::new();
        for (&domid, conn) in &self.conns {
            let may_read = |perms: &[Perm]| perms::access(perms, domid, conn.target).reads();
            if !may_read(&change.perms) && !change.old_perms.as_deref().is_some_and(may_read) {
                continue;
            }
            for w in &conn.watches {
                let reported = if path::is_at_or_below(&change.path, &w.path) {
                    &change.path
                } else if change.removal && path::is_at_or_below(&w.path, &change.path) {
                    &w.path
                } else {
                    continue;
                };
                let home = path::domain_path(domid);
                let shown = match reported.strip_prefix(home.as_str()) {
                    Some(rest) if w.relative && rest.starts_with('/') => &rest[1..],
                    _ => reported.as_str(),
                };
                events.push((domid, String::from(shown), w.token.clone()));
            }
        }
        for (domid, p, token) in events {
            self.queue_event(domid, &p, &token);
        }
    }

    fn fire_special(&mut self, name: &str) {
        let Some((_, perms)) = self.special.iter().find(|(n, _)| *n == name) else {
            return;
        };
        let mut events = Vec::new();
        for (&domid, conn) in &self.conns {
            if !perms::access(perms, domid, conn.target).reads() {
                continue;
            }
            for w in conn.watches.iter().filter(|w| w.path == name) {
                events.push((domid, w.token.clone()));
            }
        }
        for (domid, token) in events {
            self.queue_event(domid, name, &token);
        }
    }

    fn queue_event(&mut self, domid: DomId, p: &str, token: &str) {
        let mut payload = Vec::with_capacity(p.len() + token.len() + 2);
        payload.extend_from_slice(p.as_bytes());
        payload.push(0);
        payload.extend_from_slice(token.as_bytes());
        payload.push(0);
        self.pending
            .push((domid, wire::message(XsType::WatchEvent, 0, 0, &payload)));
    }

    /// Moves the events of the last request into the output queues.
    fn flush_events(&mut self) {
        for (domid, event) in core::mem::take(&mut self.pending) {
            let Some(conn) = self.conns.get_mut(&domid) else {
                continue;
            };
            if conn.event_bytes + event.len() > EVENT_QUEUE_MAX {
                conn.dropped_events += 1;
                continue;
            }
            conn.event_bytes += event.len();
            conn.out.extend(event);
        }
    }

    /// Takes up to `max` bytes of `domid`'s queued output.
    pub fn take_output(&mut self, domid: DomId, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        self.drain_output(domid, max, |bytes| out.extend_from_slice(bytes));
        out
    }

    /// Hands up to `max` bytes of `domid`'s queued output to `put` (in
    /// order, in at most two pieces) and drops them from the queue; the
    /// number of bytes. No copy is made: the ring is written from here.
    pub fn drain_output(&mut self, domid: DomId, max: usize, mut put: impl FnMut(&[u8])) -> usize {
        let Some(conn) = self.conns.get_mut(&domid) else {
            return 0;
        };
        let n = max.min(conn.out.len());
        conn.event_bytes = conn.event_bytes.min(conn.out.len() - n);
        let (front, back) = conn.out.as_slices();
        let first = n.min(front.len());
        put(&front[..first]);
        if n > first {
            put(&back[..n - first]);
        }
        conn.out.drain(..n);
        n
    }

    /// Bytes of output queued for `domid`.
    #[must_use]
    pub fn output_len(&self, domid: DomId) -> usize {
        self.conns.get(&domid).map_or(0, |c| c.out.len())
    }

    /// The ring state of `domid`'s connection: its partial request and
    /// whether it was closed for a protocol violation.
    pub(crate) fn ring_state(&mut self, domid: DomId) -> Option<(&mut Vec<u8>, &mut bool)> {
        self.conns
            .get_mut(&domid)
            .map(|c| (&mut c.input, &mut c.broken))
    }
}

#[cfg(test)]
mod tests;
