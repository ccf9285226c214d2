//! The resource store: one redb table `<plural>/<namespace>/<name>` → JSON and a meta table with the global
//! resourceVersion. Writes are all-or-nothing transactions; watch events fan out after commit.
//!
//! The API is synchronous (redb is); async callers wrap calls in `spawn_blocking`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::StoreError;
use crate::kinds::{KindFacts, facts_for, plural_is_namespaced};
use crate::object::{
    Change, ObjectKey, Stamp, change_between, creation_timestamp_of, generation_of,
    keep_server_assigned, name_of, namespace_of, stored_form, uid_of,
};
use crate::selector::LabelSelector;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const RESOURCE_VERSION: &str = "resourceVersion";
const BOOTSTRAPPED: &str = "bootstrapped";
/// Events a slow watcher may fall behind before it gets `Lagged` and must list again.
const WATCH_BUFFER: usize = 4096;

/// One document to apply, with where it came from (`file:line`) for error messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyItem {
    pub object: Value,
    #[serde(default)]
    pub origin: String,
}

/// Whether an existing object is an error (`create`) or gets updated (`apply`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    #[default]
    Apply,
    Create,
}

/// Options of one apply batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApplyOptions {
    /// `-n`: the namespace of namespaced objects that name none; an object naming another one is an error.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub mode: WriteMode,
}

/// What apply did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

/// One line of apply's answer: `reference` is kubectl's `service/httpbin`, `deployment.extensions/httpbin`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyResult {
    pub reference: String,
    pub action: ApplyAction,
    pub object: Value,
    /// Istio's validation warnings for this object (`origin: path: message`); it was applied anyway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl std::fmt::Display for ApplyResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let action = match self.action {
            ApplyAction::Created => "created",
            ApplyAction::Configured => "configured",
            ApplyAction::Unchanged => "unchanged",
        };
        write!(f, "{} {action}", self.reference)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// A change, sent to subscribers after its transaction committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub plural: String,
    pub object: Value,
    pub resource_version: u64,
}

/// A list answer: the items and the store's resourceVersion at the time of the read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectList {
    pub items: Vec<Value>,
    pub resource_version: u64,
}

/// The resource store. Share it as `Arc<Store>`.
pub struct Store {
    /// `None` only while a reopen after an I/O error has failed (the disk is still full).
    db: RwLock<Option<Database>>,
    /// Set by an I/O error: redb then fails every later operation with `PreviousIo` until the database is
    /// closed and opened again, so the next operation reopens it (redb repairs it on open).
    broken: AtomicBool,
    path: PathBuf,
    events: broadcast::Sender<WatchEvent>,
    /// Serialises writers so events leave in commit order; holds the recent events (oldest first) that
    /// a watch from a past resourceVersion replays.
    write_order: Mutex<VecDeque<WatchEvent>>,
}

impl Store {
    /// Opens (or creates) the store file and, on first start, creates namespaces `default` and
    /// `istio-system` and the PERMISSIVE MeshPolicy `default`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let storage = |e: redb::DatabaseError| storage_error(path, e);
        let db = Database::create(path).map_err(storage)?;
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let store = Store {
            db: RwLock::new(Some(db)),
            broken: AtomicBool::new(false),
            path: path.to_path_buf(),
            events,
            write_order: Mutex::new(VecDeque::new()),
        };
        store.create_tables()?;
        store.bootstrap()?;
        Ok(store)
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        let e = e.into();
        if matches!(
            e,
            redb::Error::Io(_)
                | redb::Error::PreviousIo
                | redb::Error::DatabaseClosed
                | redb::Error::Backend(_)
        ) {
            self.broken.store(true, Ordering::Release);
        }
        storage_error(&self.path, e)
    }

    /// The open database, reopened first if an I/O error broke it. A full disk (ENOSPC) fails the writes
    /// that hit it, then the store works again once space is back, without a restart.
    fn database(&self) -> Result<RwLockReadGuard<'_, Option<Database>>, StoreError> {
        if self.broken.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            return Err(StoreError::Storage {
                path: self.path.display().to_string(),
                message: "the database is closed after an I/O error and could not be reopened yet"
                    .into(),
            });
        }
        Ok(guard)
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        if !self.broken.load(Ordering::Acquire) {
            // Another caller reopened it while we waited.
            return Ok(());
        }
        // redb holds a lock on the file: the old handle must be gone before the new one opens it.
        if let Some(old) = slot.take() {
            let _ = old.close();
        }
        let db = Database::create(&self.path).map_err(|e| storage_error(&self.path, e))?;
        *slot = Some(db);
        self.broken.store(false, Ordering::Release);
        tracing::warn!(path = %self.path.display(), "store reopened after an I/O error");
        Ok(())
    }

    fn create_tables(&self) -> Result<(), StoreError> {
        let db = self.database()?;
        let txn = open(&db).begin_write().map_err(|e| self.err(e))?;
        txn.open_table(OBJECTS).map_err(|e| self.err(e))?;
        txn.open_table(META).map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }

    fn bootstrap(&self) -> Result<(), StoreError> {
        let done = {
            let db = self.database()?;
            let txn = open(&db).begin_read().map_err(|e| self.err(e))?;
            let meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.get(BOOTSTRAPPED).map_err(|e| self.err(e))?.is_some()
        };
        if done {
            return Ok(());
        }
        let item = |object: Value| ApplyItem {
            object,
            origin: "bootstrap".into(),
        };
        let items = vec![
            item(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})),
            item(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
            ),
            item(
                json!({"apiVersion": "authentication.istio.io/v1alpha1", "kind": "MeshPolicy",
                "metadata": {"name": "default"}, "spec": {"peers": [{"mtls": {"mode": "PERMISSIVE"}}]}}),
            ),
        ];
        self.write(|txn, next_rv, events| {
            let results = apply_in(self, txn, &items, &ApplyOptions::default(), next_rv, events)?;
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.insert(BOOTSTRAPPED, 1).map_err(|e| self.err(e))?;
            Ok(results)
        })
        .map(drop)
    }

    /// Runs `body` in one write transaction with a resourceVersion allocator; commits, then sends the
    /// events `body` collected.
    fn write<T>(
        &self,
        body: impl FnOnce(
            &redb::WriteTransaction,
            &mut dyn FnMut() -> u64,
            &mut Vec<WatchEvent>,
        ) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut history = self.write_order.lock().unwrap_or_else(|p| p.into_inner());
        let db = self.database()?;
        let txn = open(&db).begin_write().map_err(|e| self.err(e))?;
        let mut rv = {
            let meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let current = meta.get(RESOURCE_VERSION).map_err(|e| self.err(e))?;
            current.map(|g| g.value()).unwrap_or(0)
        };
        let mut events = Vec::new();
        let mut next_rv = || {
            rv += 1;
            rv
        };
        let out = body(&txn, &mut next_rv, &mut events)?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.insert(RESOURCE_VERSION, rv).map_err(|e| self.err(e))?;
        }
        // Immediate durability (redb's default): once commit returns, a kill -9 loses nothing.
        txn.commit().map_err(|e| self.err(e))?;
        for event in events {
            if history.len() == WATCH_BUFFER {
                history.pop_front();
            }
            history.push_back(event.clone());
            // No subscriber is fine: nobody is watching.
            let _ = self.events.send(event);
        }
        Ok(out)
    }

    /// Applies every item in ONE transaction: all are validated first; namespaces must exist or be created
    /// in the same batch. Nothing is written if any item fails.
    pub fn apply(
        &self,
        items: &[ApplyItem],
        options: &ApplyOptions,
    ) -> Result<Vec<ApplyResult>, StoreError> {
        if items.is_empty() {
            return Err(StoreError::BadRequest(
                "no objects passed to apply: the input holds no documents".into(),
            ));
        }
        self.write(|txn, next_rv, events| apply_in(self, txn, items, options, next_rv, events))
    }

    /// One object, or `NotFound`.
    pub fn get(&self, key: &ObjectKey) -> Result<Value, StoreError> {
        let db = self.database()?;
        let txn = open(&db).begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(OBJECTS).map_err(|e| self.err(e))?;
        let found = table.get(key.encode().as_str()).map_err(|e| self.err(e))?;
        match found {
            Some(bytes) => decode(&self.path, bytes.value()),
            None => Err(StoreError::not_found(&key.plural, &key.name)),
        }
    }

    /// The objects of `plural` (every kind when `None`), in `namespace` if given, matching `selector`.
    pub fn list(
        &self,
        plural: Option<&str>,
        namespace: Option<&str>,
        selector: &LabelSelector,
    ) -> Result<ObjectList, StoreError> {
        let db = self.database()?;
        let txn = open(&db).begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(OBJECTS).map_err(|e| self.err(e))?;
        let meta = txn.open_table(META).map_err(|e| self.err(e))?;
        let resource_version = meta
            .get(RESOURCE_VERSION)
            .map_err(|e| self.err(e))?
            .map(|g| g.value())
            .unwrap_or(0);
        let prefix = plural.map(|p| format!("{p}/")).unwrap_or_default();
        let mut items = Vec::new();
        for entry in table.range(prefix.as_str()..).map_err(|e| self.err(e))? {
            let (key, value) = entry.map_err(|e| self.err(e))?;
            if !key.value().starts_with(&prefix) {
                break;
            }
            let Some(parsed) = ObjectKey::decode(key.value()) else {
                continue;
            };
            if namespace.is_some_and(|ns| ns != parsed.namespace) {
                continue;
            }
            let object = decode(&self.path, value.value())?;
            let labels = object.get("metadata").and_then(|m| m.get("labels"));
            if selector.matches(labels) {
                items.push(object);
            }
        }
        Ok(ObjectList {
            items,
            resource_version,
        })
    }

    /// Deletes one object (a namespace takes its objects with it); answers the deleted object.
    pub fn delete(&self, key: &ObjectKey) -> Result<Value, StoreError> {
        self.write(|txn, next_rv, events| {
            let mut table = txn.open_table(OBJECTS).map_err(|e| self.err(e))?;
            let removed = table
                .remove(key.encode().as_str())
                .map_err(|e| self.err(e))?
                .map(|g| g.value().to_vec());
            let Some(bytes) = removed else {
                return Err(StoreError::not_found(&key.plural, &key.name));
            };
            let object = decode(&self.path, &bytes)?;
            let mut doomed = vec![(key.clone(), object.clone())];
            if key.plural == "namespaces" {
                let mut inside = Vec::new();
                for entry in table.iter().map_err(|e| self.err(e))? {
                    let (k, v) = entry.map_err(|e| self.err(e))?;
                    if let Some(parsed) = ObjectKey::decode(k.value())
                        && parsed.namespace == key.name
                        && plural_is_namespaced(&parsed.plural)
                    {
                        inside.push((parsed, decode(&self.path, v.value())?));
                    }
                }
                for (k, _) in &inside {
                    table.remove(k.encode().as_str()).map_err(|e| self.err(e))?;
                }
                doomed.extend(inside);
            }
            for (k, object) in doomed {
                events.push(WatchEvent {
                    event_type: EventType::Deleted,
                    plural: k.plural,
                    object,
                    resource_version: next_rv(),
                });
            }
            Ok(object)
        })
    }

    /// Replaces `status` of one object: bumps resourceVersion, never generation (for controllers).
    pub fn update_status(&self, key: &ObjectKey, status: Value) -> Result<Value, StoreError> {
        self.write(|txn, next_rv, events| {
            let mut table = txn.open_table(OBJECTS).map_err(|e| self.err(e))?;
            let current = table
                .get(key.encode().as_str())
                .map_err(|e| self.err(e))?
                .map(|g| g.value().to_vec());
            let Some(bytes) = current else {
                return Err(StoreError::not_found(&key.plural, &key.name));
            };
            let mut object = decode(&self.path, &bytes)?;
            let rv = next_rv();
            if let Some(map) = object.as_object_mut() {
                map.insert("status".into(), status);
                if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("resourceVersion".into(), Value::from(rv.to_string()));
                }
            }
            table
                .insert(key.encode().as_str(), encode(&object).as_slice())
                .map_err(|e| self.err(e))?;
            events.push(WatchEvent {
                event_type: EventType::Modified,
                plural: key.plural.clone(),
                object: object.clone(),
                resource_version: rv,
            });
            Ok(object)
        })
    }

    /// Every event committed from now on. A receiver that falls more than 4096 events behind gets
    /// `RecvError::Lagged` and should list again.
    pub fn subscribe(&self) -> broadcast::Receiver<WatchEvent> {
        self.events.subscribe()
    }

    /// "List then watch": the current objects of `plural` (all kinds when `None`) and a receiver of every
    /// later event. Events with `resource_version <= list.resource_version` are already in the list; skip
    /// them.
    pub fn list_and_subscribe(
        &self,
        plural: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<(ObjectList, broadcast::Receiver<WatchEvent>), StoreError> {
        let receiver = self.subscribe();
        let list = self.list(plural, namespace, &LabelSelector::default())?;
        Ok((list, receiver))
    }

    /// "Watch from resourceVersion": the events committed after `resource_version` (oldest first) and a
    /// receiver of every later one, with no gap between them. `Expired` when those events are no longer
    /// kept (more than 4096 changes ago): list again and watch from the list's resourceVersion.
    pub fn subscribe_from(
        &self,
        resource_version: u64,
    ) -> Result<(Vec<WatchEvent>, broadcast::Receiver<WatchEvent>), StoreError> {
        // Holding the writers' lock: no commit can fall between the backlog and the receiver.
        let history = self.write_order.lock().unwrap_or_else(|p| p.into_inner());
        let receiver = self.events.subscribe();
        let current = self.list_resource_version()?;
        let oldest_kept = history.front().map_or(current + 1, |e| e.resource_version);
        if resource_version < current && resource_version + 1 < oldest_kept {
            return Err(StoreError::Expired { resource_version });
        }
        let backlog = history
            .iter()
            .filter(|e| e.resource_version > resource_version)
            .cloned()
            .collect();
        Ok((backlog, receiver))
    }

    fn list_resource_version(&self) -> Result<u64, StoreError> {
        let db = self.database()?;
        let txn = open(&db).begin_read().map_err(|e| self.err(e))?;
        let meta = txn.open_table(META).map_err(|e| self.err(e))?;
        let current = meta.get(RESOURCE_VERSION).map_err(|e| self.err(e))?;
        Ok(current.map(|g| g.value()).unwrap_or(0))
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The database behind a guard from `Store::database` (which never hands out an empty one).
fn open<'a>(guard: &'a RwLockReadGuard<'_, Option<Database>>) -> &'a Database {
    guard
        .as_ref()
        .expect("Store::database returns only an open database")
}

fn storage_error(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Storage {
        path: path.display().to_string(),
        message: e.into().to_string(),
    }
}

fn encode(object: &Value) -> Vec<u8> {
    serde_json::to_vec(object).unwrap_or_default()
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Storage {
        path: path.display().to_string(),
        message: format!("a stored object is not valid JSON ({e})"),
    })
}

/// A validated item: its facts, key and the object with its namespace settled.
struct Checked {
    facts: KindFacts,
    key: ObjectKey,
    object: Value,
}

fn check_item(item: &ApplyItem, options: &ApplyOptions) -> Result<Checked, StoreError> {
    let origin = &item.origin;
    let facts = facts_for(&item.object, origin)?;
    let Some(name) = name_of(&item.object).filter(|n| !n.is_empty()) else {
        return Err(StoreError::Invalid(format!(
            "{origin}: metadata.name is missing: every object needs a name"
        )));
    };
    let mut object = item.object.clone();
    let namespace = if facts.namespaced {
        let own = namespace_of(&item.object);
        let namespace = match (own, options.namespace.as_deref()) {
            (Some(own), Some(wanted)) if own != wanted => {
                return Err(StoreError::BadRequest(format!(
                    "the namespace from the provided object \"{own}\" does not match the namespace \
                     \"{wanted}\". You must pass '--namespace={own}' to perform this operation."
                )));
            }
            (Some(own), _) => own.to_string(),
            (None, Some(wanted)) => wanted.to_string(),
            (None, None) => "default".to_string(),
        };
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), Value::from(namespace.clone()));
        }
        Some(namespace)
    } else {
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("namespace");
        }
        None
    };
    let key = ObjectKey::new(facts.plural, namespace.as_deref(), name);
    Ok(Checked { facts, key, object })
}

fn apply_in(
    store: &Store,
    txn: &redb::WriteTransaction,
    items: &[ApplyItem],
    options: &ApplyOptions,
    next_rv: &mut dyn FnMut() -> u64,
    events: &mut Vec<WatchEvent>,
) -> Result<Vec<ApplyResult>, StoreError> {
    let path = store.path.as_path();
    let err = |e: redb::Error| store.err(e);
    let checked = items
        .iter()
        .map(|item| check_item(item, options))
        .collect::<Result<Vec<_>, _>>()?;
    let mut table = txn.open_table(OBJECTS).map_err(|e| err(e.into()))?;
    for c in &checked {
        if c.facts.namespaced {
            let ns = &c.key.namespace;
            let created_here = checked
                .iter()
                .any(|other| other.key.plural == "namespaces" && &other.key.name == ns);
            let exists = table
                .get(ObjectKey::new("namespaces", None, ns).encode().as_str())
                .map_err(|e| err(e.into()))?
                .is_some();
            if !created_here && !exists {
                return Err(StoreError::not_found("namespaces", ns));
            }
        }
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut results = Vec::with_capacity(checked.len());
    for mut c in checked {
        let encoded_key = c.key.encode();
        let previous = table
            .get(encoded_key.as_str())
            .map_err(|e| err(e.into()))?
            .map(|g| g.value().to_vec());
        let previous = previous.map(|bytes| decode(path, &bytes)).transpose()?;
        if previous.is_some() && options.mode == WriteMode::Create {
            return Err(StoreError::AlreadyExists {
                plural: c.key.plural.clone(),
                name: c.key.name.clone(),
            });
        }
        if let Some(stored) = &previous {
            keep_server_assigned(&c.key.plural, stored, &mut c.object);
        }
        let namespace = (!c.key.namespace.is_empty()).then_some(c.key.namespace.as_str());
        let self_link = c.facts.self_link(namespace, &c.key.name);
        let reference = format!("{}/{}", c.facts.display, c.key.name);
        let (action, stamp_from) = match &previous {
            None => (ApplyAction::Created, None),
            Some(stored) => match change_between(stored, &c.object) {
                Change::None => {
                    results.push(ApplyResult {
                        reference,
                        action: ApplyAction::Unchanged,
                        object: stored.clone(),
                        warnings: c.facts.warnings.clone(),
                    });
                    continue;
                }
                Change::MetadataOnly => (ApplyAction::Configured, Some((stored, 0))),
                Change::Content => (ApplyAction::Configured, Some((stored, 1))),
            },
        };
        let rv = next_rv();
        let stamp = match stamp_from {
            None => Stamp {
                uid: uuid::Uuid::new_v4().to_string(),
                resource_version: rv,
                generation: 1,
                creation_timestamp: now.clone(),
                self_link: &self_link,
            },
            Some((stored, bump)) => Stamp {
                uid: uid_of(stored).unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                resource_version: rv,
                generation: generation_of(stored) + bump,
                creation_timestamp: creation_timestamp_of(stored).unwrap_or_else(|| now.clone()),
                self_link: &self_link,
            },
        };
        let object = stored_form(&c.object, previous.as_ref(), stamp);
        table
            .insert(encoded_key.as_str(), encode(&object).as_slice())
            .map_err(|e| err(e.into()))?;
        events.push(WatchEvent {
            event_type: if previous.is_some() {
                EventType::Modified
            } else {
                EventType::Added
            },
            plural: c.key.plural.clone(),
            object: object.clone(),
            resource_version: rv,
        });
        results.push(ApplyResult {
            reference,
            action,
            object,
            warnings: c.facts.warnings,
        });
    }
    Ok(results)
}
