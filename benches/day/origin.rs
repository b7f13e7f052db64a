//! The origin, reduced to what the CDN and the devices see of its answers: the ETag,
//! 304 or not, the size of the body, the binaries sent, and which binaries the device
//! runs once it has them. Answers come from the resolver itself (`RuleSet::answer`) and
//! are memoized per rule set, as the origin's own answer cache does: an answer is a
//! function of the rules, the query and `If-None-Match`.

use std::collections::HashMap;
use std::rc::Rc;

use fleetpack_resolver::{DeviceRequest, PayloadType, Rule, RuleSet, canonical_if_none_match};

/// A binary, by its place in the [`Catalog`].
pub type BinaryId = u32;
/// A set of binaries a device runs, by its place in the [`Catalog`].
pub type SetId = u32;

#[derive(Debug)]
struct Binary {
    md5: String,
    size: u64,
}

/// A set of binaries a device runs, and the `If-None-Match` it sends for them.
#[derive(Debug)]
pub struct InstalledSet {
    binaries: Vec<BinaryId>,
    /// The MD5s in the CDN function's canonical form; empty for none.
    pub if_none_match: String,
}

impl InstalledSet {
    pub fn contains(&self, binary: BinaryId) -> bool {
        self.binaries.contains(&binary)
    }
}

/// Every binary published during the day, and every set of them some device runs:
/// devices share a handful of sets, so each keeps a number instead of its digests.
#[derive(Debug)]
pub struct Catalog {
    binaries: Vec<Binary>,
    by_md5: HashMap<String, BinaryId>,
    sets: Vec<InstalledSet>,
    set_ids: HashMap<Vec<BinaryId>, SetId>,
}

impl Catalog {
    pub fn new(releases: &[Rule]) -> Catalog {
        let binaries: Vec<Binary> = releases
            .iter()
            .map(|rule| Binary {
                md5: rule.md5.clone(),
                size: rule.size.expect("every release has a size"),
            })
            .collect();
        let by_md5 = (0..)
            .zip(&binaries)
            .map(|(id, binary)| (binary.md5.clone(), id))
            .collect();
        Catalog {
            binaries,
            by_md5,
            sets: Vec::new(),
            set_ids: HashMap::new(),
        }
    }

    pub fn binary(&self, md5: &str) -> BinaryId {
        *self.by_md5.get(md5).expect("a binary published today")
    }

    pub fn size(&self, binary: BinaryId) -> u64 {
        self.binaries[binary as usize].size
    }

    pub fn set(&self, set: SetId) -> &InstalledSet {
        &self.sets[set as usize]
    }

    fn intern(&mut self, mut binaries: Vec<BinaryId>) -> SetId {
        binaries.sort_unstable();
        binaries.dedup();
        if let Some(&id) = self.set_ids.get(&binaries) {
            return id;
        }
        let md5s: Vec<&str> = binaries
            .iter()
            .map(|&binary| self.binaries[binary as usize].md5.as_str())
            .collect();
        let if_none_match =
            canonical_if_none_match(&md5s.join(",")).expect("MD5s are valid entity tags");
        let id = SetId::try_from(self.sets.len()).expect("fewer than 2^32 sets");
        self.set_ids.insert(binaries.clone(), id);
        self.sets.push(InstalledSet {
            binaries,
            if_none_match,
        });
        id
    }
}

/// An answer of the origin, as a response carries it.
#[derive(Debug)]
pub struct Answer {
    pub etag: String,
    pub not_modified: bool,
    /// Bytes of the body: none for a 304; `package_details.json`, plus every binary
    /// sent for a full payload (tar and gzip framing, under 0.01% of MiB-sized binaries,
    /// left out).
    pub body: u64,
    /// Binaries the device lacks: in the package for a full payload, to download for
    /// metadata only.
    pub missing: Vec<BinaryId>,
    /// What the device runs once it has them.
    pub runs: SetId,
}

/// One rule set's origin: every origin instance answers alike, so one stands for all.
#[derive(Debug)]
pub struct Origin<'a> {
    rules: &'a RuleSet,
    answers: HashMap<String, Rc<Answer>>,
}

impl<'a> Origin<'a> {
    pub fn new(rules: &'a RuleSet) -> Origin<'a> {
        Origin {
            rules,
            answers: HashMap::new(),
        }
    }

    /// The answer to `query` (in the CDN's canonical form) with the device's
    /// `If-None-Match` list (as it sent it, or as `installed=` carried it), and, when
    /// the CDN revalidates, the ETag of the response it holds.
    pub fn answer(
        &mut self,
        catalog: &mut Catalog,
        query: &str,
        if_none_match: &str,
        cached_etag: Option<&str>,
    ) -> Rc<Answer> {
        let memo = format!("{query}\n{if_none_match}\n{}", cached_etag.unwrap_or(""));
        if let Some(answer) = self.answers.get(&memo) {
            return Rc::clone(answer);
        }
        let revalidation = cached_etag.map(|etag| format!("\"{etag}\""));
        let lines = [Some(if_none_match), revalidation.as_deref()]
            .into_iter()
            .flatten()
            .filter(|line| !line.is_empty())
            .map(str::as_bytes);
        let request = DeviceRequest::parse(query, lines).expect("the CDN forwards valid requests");
        let plan = self
            .rules
            .answer(&request)
            .expect("every configuration selects a package");
        let missing: Vec<BinaryId> = plan
            .to_send()
            .map(|entry| catalog.binary(&entry.md5))
            .collect();
        let body = if plan.is_not_modified() {
            0
        } else {
            let details = plan.details_json().len() as u64;
            match plan.payload() {
                PayloadType::FullPayload => {
                    details
                        + missing
                            .iter()
                            .map(|&binary| catalog.size(binary))
                            .sum::<u64>()
                }
                PayloadType::MetadataOnly => details,
            }
        };
        let runs = plan
            .entries()
            .iter()
            .map(|entry| catalog.binary(&entry.md5))
            .collect();
        let answer = Rc::new(Answer {
            etag: plan.etag().opaque().to_owned(),
            not_modified: plan.is_not_modified(),
            body,
            missing,
            runs: catalog.intern(runs),
        });
        self.answers.insert(memo, Rc::clone(&answer));
        answer
    }
}
