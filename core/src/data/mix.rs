//! Several datasets as one: `mix:openmoji=0.5,fluentui=0.3,openclipart=0.2` (weights are
//! normalised; `mix:openmoji,fluentui` weighs the sources equally). A source is any other spec
//! [`super::open`] accepts (`openmoji:DIR`, `jsonl:FILE`, …; not another mix, and no commas).
//!
//! - **Train**: a fixed interleaving schedule of [`PERIOD`] slots repeats; each source owns a
//!   share of the slots in proportion to its weight (largest remainders, at least one slot each),
//!   spread evenly by smooth weighted round-robin. Index `i` is slot `i % PERIOD` of period
//!   `i / PERIOD`; the `k`-th slot a source gets overall is its training pair `k % len`. So the
//!   same index always gives the same pair, every run and machine, and any run of `PERIOD`
//!   consecutive indices holds each source exactly its share.
//! - **`len(Train)`** is the fewest whole periods in which every source shows each of its training
//!   pairs at least once: `PERIOD × max over sources of ceil(len_s / slots_s)`. A heavily weighted
//!   small source repeats; nothing is left out. With an unbounded source it is that of the bounded
//!   ones (`None` when all are unbounded).
//! - **Test and unseen** hold every pair of the sources' own splits once, at their natural sizes
//!   (weights are a training choice; evaluation counts every held-out pair once), interleaved in
//!   proportion to those sizes: source `s`'s `j`-th pair sits at `(j + ½) / len_s` of the way, so
//!   the first `n` pairs — what an evaluation of `n` pairs reads — hold each source in its share.
//!   (With an unbounded held-out split among the sources they are one after another instead, the
//!   unbounded one last.)
//! - Sample ids are prefixed by the source as written: `fluentui/fluentui-airplane`. Hard negatives
//!   are the source's own, so they come from the same source and split.

use super::{Dataset, Sample, Split};
use crate::{EgaError, Result};

/// Slots in one period of the training schedule: weights are honoured to 1 / `PERIOD`.
pub const PERIOD: usize = 1000;

/// One source of a mix spec: what to open and its weight, if one was given.
#[derive(Debug, Clone, PartialEq)]
pub struct MixSource {
    /// The source's own spec: `openmoji`, `jsonl:pairs.jsonl`.
    pub spec: String,
    /// Its weight before normalising.
    pub weight: Option<f64>,
}

fn spec_error(spec: &str, reason: String) -> EgaError {
    EgaError::config("data", spec, reason)
}

/// Parses `mix:SOURCE[=WEIGHT],…` without opening anything, so a typo is reported before any
/// data is read. Every source has a positive finite weight, or none has one (equal weights).
pub fn parse_spec(spec: &str) -> Result<Vec<MixSource>> {
    let body = spec.strip_prefix("mix:").ok_or_else(|| spec_error(spec, "a mix spec starts with `mix:`".into()))?;
    if body.trim().is_empty() {
        return Err(spec_error(spec, "the mix lists no sources: give `mix:SOURCE=WEIGHT,…`".into()));
    }
    let mut sources: Vec<MixSource> = Vec::new();
    for (number, part) in body.split(',').enumerate() {
        let part = part.trim();
        if part.is_empty() {
            return Err(spec_error(spec, format!("source {} of the mix is empty (two commas in a row?)", number + 1)));
        }
        // The weight follows the last `=`, so a path may hold `=` (but not a comma).
        let (source, weight) = match part.rsplit_once('=') {
            Some((source, weight)) => {
                let value: f64 = weight.trim().parse().map_err(|_| {
                    spec_error(spec, format!("the weight of `{}` is `{weight}`, not a number", source.trim()))
                })?;
                if !value.is_finite() || value <= 0.0 {
                    return Err(spec_error(
                        spec,
                        format!("the weight of `{}` is {weight}; weights must be positive numbers", source.trim()),
                    ));
                }
                (source.trim(), Some(value))
            }
            None => (part, None),
        };
        if source.is_empty() {
            return Err(spec_error(spec, format!("source {} of the mix has a weight but no name", number + 1)));
        }
        if source.starts_with("mix:") {
            return Err(spec_error(spec, format!("`{source}`: a mix cannot contain another mix")));
        }
        if sources.iter().any(|s| s.spec == source) {
            return Err(spec_error(spec, format!("`{source}` is listed twice")));
        }
        sources.push(MixSource { spec: source.to_string(), weight });
    }
    let weighted = sources.iter().filter(|s| s.weight.is_some()).count();
    if weighted != 0 && weighted != sources.len() {
        return Err(spec_error(spec, "give every source a weight, or none (equal weights)".into()));
    }
    Ok(sources)
}

/// Slots per period for each weight: proportional, by largest remainders, at least one each.
fn slots(weights: &[f64]) -> Vec<usize> {
    let total: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights.iter().map(|w| w / total * PERIOD as f64).collect();
    let mut slots: Vec<usize> = exact.iter().map(|e| (e.floor() as usize).max(1)).collect();
    let mut by_remainder: Vec<usize> = (0..weights.len()).collect();
    by_remainder
        .sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    let mut assigned: usize = slots.iter().sum();
    for &source in by_remainder.iter().cycle().take(weights.len() * 2) {
        if assigned >= PERIOD {
            break;
        }
        slots[source] += 1;
        assigned += 1;
    }
    // The minimum of one slot may overshoot: take the excess from the largest shares.
    while assigned > PERIOD {
        let largest = (0..slots.len()).max_by_key(|&s| (slots[s], std::cmp::Reverse(s))).unwrap_or(0);
        slots[largest] -= 1;
        assigned -= 1;
    }
    slots
}

/// The schedule of one period: for each slot, its source and how many slots that source had
/// before it in the period. Smooth weighted round-robin spreads each source's slots evenly.
fn schedule(slots: &[usize]) -> Vec<(usize, usize)> {
    let mut current = vec![0i64; slots.len()];
    let mut seen = vec![0usize; slots.len()];
    let mut out = Vec::with_capacity(PERIOD);
    for _ in 0..PERIOD {
        for (c, &s) in current.iter_mut().zip(slots) {
            *c += s as i64;
        }
        let pick = (0..slots.len()).max_by_key(|&s| (current[s], std::cmp::Reverse(s))).unwrap_or(0);
        current[pick] -= PERIOD as i64;
        out.push((pick, seen[pick]));
        seen[pick] += 1;
    }
    out
}

/// A weighted mixture of datasets.
pub struct MixDataset {
    spec: String,
    labels: Vec<String>,
    sources: Vec<Box<dyn Dataset>>,
    /// Normalised weights.
    weights: Vec<f64>,
    slots: Vec<usize>,
    schedule: Vec<(usize, usize)>,
    train_len: Option<usize>,
    /// `(source, index)` of each test and unseen pair, in order (`None`: a source is unbounded).
    held_out: [Option<Vec<(usize, usize)>>; 2],
    /// What the sources left out when opened (`skip_bad`), each named by its source.
    skipped: Vec<String>,
}

/// Every pair of sources of `lens` pairs once, each source's `j`-th at `(j + ½) / len` of the
/// way (ties in source order).
fn interleave(lens: &[usize]) -> Vec<(usize, usize)> {
    let mut order: Vec<(usize, usize)> =
        lens.iter().enumerate().flat_map(|(source, &len)| (0..len).map(move |j| (source, j))).collect();
    let key = |&(source, j): &(usize, usize)| (2 * j + 1) as f64 / (2 * lens[source]) as f64;
    order.sort_by(|a, b| key(a).total_cmp(&key(b)).then(a.0.cmp(&b.0)));
    order
}

impl MixDataset {
    /// Parses `spec` ([`parse_spec`]) and opens each source with [`super::open`]; an unknown or
    /// missing source is an error naming it.
    pub fn open(spec: &str, image_size: usize, skip_bad: bool) -> Result<Self> {
        let parsed = parse_spec(spec)?;
        let mut sources = Vec::with_capacity(parsed.len());
        for source in &parsed {
            let dataset = super::open(&source.spec, image_size, skip_bad)
                .map_err(|err| spec_error(spec, format!("source `{}` of the mix: {err}", source.spec)))?;
            sources.push((source.spec.clone(), source.weight.unwrap_or(1.0), dataset));
        }
        Self::new(spec, sources)
    }

    /// A mix of opened datasets: `(label, weight, dataset)`, weights positive (normalised here).
    /// Every source must have training pairs.
    pub fn new(spec: &str, sources: Vec<(String, f64, Box<dyn Dataset>)>) -> Result<Self> {
        if sources.is_empty() {
            return Err(spec_error(spec, "the mix lists no sources".into()));
        }
        if let Some((label, weight, _)) = sources.iter().find(|(_, w, _)| !w.is_finite() || *w <= 0.0) {
            return Err(spec_error(spec, format!("the weight of `{label}` is {weight}; weights must be positive")));
        }
        if let Some((label, _, _)) = sources.iter().find(|(_, _, d)| d.len(Split::Train) == Some(0)) {
            return Err(spec_error(spec, format!("source `{label}` has no training pairs")));
        }
        let total: f64 = sources.iter().map(|(_, w, _)| w).sum();
        let weights: Vec<f64> = sources.iter().map(|(_, w, _)| w / total).collect();
        let slots = slots(&weights);
        let schedule = schedule(&slots);
        let periods = sources
            .iter()
            .zip(&slots)
            .filter_map(|((_, _, d), &s)| d.len(Split::Train).map(|len| len.div_ceil(s)))
            .max();
        let held_out = [Split::Test, Split::Unseen].map(|split| {
            let lens: Option<Vec<usize>> = sources.iter().map(|(_, _, d)| d.len(split)).collect();
            lens.map(|lens| interleave(&lens))
        });
        let (labels, datasets): (Vec<String>, Vec<Box<dyn Dataset>>) =
            sources.into_iter().map(|(label, _, d)| (label, d)).unzip();
        let skipped = labels
            .iter()
            .zip(&datasets)
            .flat_map(|(label, d)| d.skipped().iter().map(move |why| format!("{label}: {why}")))
            .collect();
        Ok(Self {
            skipped,
            spec: spec.to_string(),
            labels,
            sources: datasets,
            weights,
            slots,
            schedule,
            train_len: periods.map(|p| p * PERIOD),
            held_out,
        })
    }

    /// The sources' labels, in order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The normalised weights, in order.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Slots of each source in one period of [`PERIOD`].
    pub fn slots(&self) -> &[usize] {
        &self.slots
    }

    /// Which source and which of its pairs `index` of `split` is.
    pub fn locate(&self, split: Split, index: usize) -> Result<(usize, usize)> {
        let out_of_range = |len: usize| {
            EgaError::Data(format!("{}: the {split} split has {len} pairs, asked for number {index}", self.spec))
        };
        if split == Split::Train {
            if let Some(len) = self.train_len {
                if index >= len {
                    return Err(out_of_range(len));
                }
            }
            let (source, rank) = self.schedule[index % PERIOD];
            let k = index / PERIOD * self.slots[source] + rank;
            let within = match self.sources[source].len(Split::Train) {
                Some(len) => k % len,
                None => k,
            };
            return Ok((source, within));
        }
        let order = if split == Split::Test { &self.held_out[0] } else { &self.held_out[1] };
        if let Some(order) = order {
            return order.get(index).copied().ok_or_else(|| out_of_range(order.len()));
        }
        let mut rest = index;
        for (source, dataset) in self.sources.iter().enumerate() {
            match dataset.len(split) {
                Some(len) if rest >= len => rest -= len,
                _ => return Ok((source, rest)),
            }
        }
        Err(out_of_range(index - rest))
    }
}

impl Dataset for MixDataset {
    fn name(&self) -> String {
        self.spec.clone()
    }

    fn len(&self, split: Split) -> Option<usize> {
        match split {
            Split::Train => self.train_len,
            _ => self.sources.iter().map(|d| d.len(split)).sum(),
        }
    }

    fn sample(&self, split: Split, index: usize) -> Result<Sample> {
        let (source, within) = self.locate(split, index)?;
        let mut sample = self.sources[source].sample(split, within)?;
        sample.id = format!("{}/{}", self.labels[source], sample.id);
        Ok(sample)
    }

    fn skipped(&self) -> &[String] {
        &self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_proportional_and_fill_the_period() {
        assert_eq!(slots(&[0.5, 0.3, 0.2]), vec![500, 300, 200]);
        assert_eq!(slots(&[1.0, 1.0, 1.0]), vec![334, 333, 333]);
        assert_eq!(slots(&[1.0, 1e-9]), vec![999, 1]);
        let schedule = schedule(&[500, 300, 200]);
        assert_eq!(schedule.len(), PERIOD);
        assert_eq!(schedule.iter().filter(|(s, _)| *s == 2).count(), 200);
        // Evenly spread: every 10 consecutive slots hold 5, 3 and 2 of the sources.
        for chunk in schedule.chunks(10) {
            assert_eq!(chunk.iter().filter(|(s, _)| *s == 0).count(), 5, "{chunk:?}");
        }
    }
}
