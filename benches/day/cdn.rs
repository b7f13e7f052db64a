//! A cache like CloudFront's in front of the origin: one entry per cache key, fresh for
//! `s-maxage`; an expired entry is revalidated with its ETag (`If-None-Match:
//! "<etag>"`), and the origin's 304 refreshes it while a 200 replaces it. Concurrent
//! misses are not modelled: requests arrive one at a time.
//!
//! With `If-None-Match` in the key and `Vary: if-none-match` on responses, a
//! revalidation's 304 is filed under the revalidation's own variant (its
//! `If-None-Match` is the ETag, not the device's list), so it refreshes nothing the
//! devices hit: the device that caused it is served the stale copy, and the next
//! request of that key misses and fetches the whole body. This is what Varnish 7.1
//! does; `refreshes_on_304: false` models it.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::origin::{Answer, BinaryId, Catalog, Origin};
use crate::releases::Millis;

/// Status line and headers of a response (ETag, Cache-Control, Vary, ...): what a 304
/// costs, and what a body costs on top of itself.
pub const RESPONSE_HEAD: u64 = 400;

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub s_maxage: Millis,
    /// Whether a revalidation's 304 refreshes the entry devices hit.
    pub refreshes_on_304: bool,
}

/// What devices asked for and where the answers came from.
#[derive(Debug, Default)]
pub struct Traffic {
    pub requests: u64,
    /// Requests answered without asking the origin.
    pub hits: u64,
    pub origin_requests: u64,
    pub origin_bytes: u64,
    pub origin_not_modified: u64,
    pub delivered_bytes: u64,
    pub delivered_from_cache: u64,
}

impl Traffic {
    fn record_origin(&mut self, answer: &Answer) {
        self.origin_requests += 1;
        self.origin_bytes += RESPONSE_HEAD + answer.body;
        self.origin_not_modified += u64::from(answer.not_modified);
    }

    fn deliver(&mut self, bytes: u64, from_cache: bool) {
        self.delivered_bytes += bytes;
        if from_cache {
            self.delivered_from_cache += bytes;
        }
    }
}

/// A package request as it leaves the CDN's function.
#[derive(Debug)]
pub struct PackageRequest {
    pub cache_key: String,
    /// The canonical query the origin resolves (with `installed=` when the list moved).
    pub query: String,
    /// The device's `If-None-Match`, empty when the function moved it into the query.
    pub if_none_match: String,
}

#[derive(Debug)]
struct Entry {
    answer: Rc<Answer>,
    expires: Millis,
    /// A revalidation's 304 went to another variant: fetch the whole body next time.
    refetch: bool,
}

#[derive(Debug)]
pub struct Cdn {
    settings: Settings,
    packages: HashMap<String, Entry>,
    /// Binaries by content: immutable, so never expired nor invalidated.
    binaries: HashSet<BinaryId>,
    pub traffic: Traffic,
}

impl Cdn {
    pub fn new(settings: Settings) -> Cdn {
        Cdn {
            settings,
            packages: HashMap::new(),
            binaries: HashSet::new(),
            traffic: Traffic::default(),
        }
    }

    /// Answers a device's package request at `now`, from the cache or the origin.
    pub fn package(
        &mut self,
        now: Millis,
        request: &PackageRequest,
        origin: &mut Origin<'_>,
        catalog: &mut Catalog,
    ) -> Rc<Answer> {
        let traffic = &mut self.traffic;
        traffic.requests += 1;
        let fresh_until = now + self.settings.s_maxage;
        let ask = |origin: &mut Origin<'_>, catalog: &mut Catalog, etag: Option<&str>| {
            origin.answer(catalog, &request.query, &request.if_none_match, etag)
        };
        let (answer, from_cache) = match self.packages.get_mut(&request.cache_key) {
            Some(entry) if now < entry.expires => {
                traffic.hits += 1;
                (Rc::clone(&entry.answer), true)
            }
            Some(entry) if !entry.refetch => {
                let revalidated = ask(origin, catalog, Some(&entry.answer.etag));
                traffic.record_origin(&revalidated);
                if revalidated.not_modified {
                    if self.settings.refreshes_on_304 {
                        entry.expires = fresh_until;
                    } else {
                        entry.refetch = true;
                    }
                    (Rc::clone(&entry.answer), true)
                } else {
                    *entry = Entry {
                        answer: Rc::clone(&revalidated),
                        expires: fresh_until,
                        refetch: false,
                    };
                    (revalidated, false)
                }
            }
            _ => {
                let fetched = ask(origin, catalog, None);
                traffic.record_origin(&fetched);
                let entry = Entry {
                    answer: Rc::clone(&fetched),
                    expires: fresh_until,
                    refetch: false,
                };
                self.packages.insert(request.cache_key.clone(), entry);
                (fetched, false)
            }
        };
        traffic.deliver(RESPONSE_HEAD + answer.body, from_cache);
        answer
    }

    /// Answers a device's download of `/binaries/<sha256>` (the path is the key).
    pub fn binary(&mut self, binary: BinaryId, size: u64) {
        let traffic = &mut self.traffic;
        traffic.requests += 1;
        let cached = !self.binaries.insert(binary);
        if cached {
            traffic.hits += 1;
        } else {
            traffic.origin_requests += 1;
            traffic.origin_bytes += RESPONSE_HEAD + size;
        }
        traffic.deliver(RESPONSE_HEAD + size, cached);
    }

    /// Drops every package entry, as an invalidation of the package paths does.
    pub fn invalidate_packages(&mut self) {
        self.packages.clear();
    }
}
