//! Reading hot batches as one stream in time order, for exports and copies.
//!
//! Each stored batch is sorted by time, and batches overlap in time only a
//! little (a batch holds what arrived in a quarter of a second), so a merge
//! that opens batches in order of their first event, and only when the
//! stream reaches that time, holds one or two batches at a time, and hands
//! out long runs of one batch as zero-copy slices.
//!
//! The merge also knows how much of each batch it handed out, so that an
//! export can remove the batches it consumed and keep the rest of one it
//! cut ([`TimeMerge::take_progress`]).

use std::collections::VecDeque;

use arrow::record_batch::RecordBatch;

use crate::StoreError;
use crate::hot::{self, BatchMeta};
use crate::table::EventTable;

/// An opened batch.
#[derive(Debug)]
struct Source {
    meta: BatchMeta,
    /// Its rows until every one was handed out (then only the counts stay:
    /// a file's worth of batches is not held in memory until it commits).
    rows: Option<Rows>,
    /// Rows in the batch.
    total: usize,
    /// Rows handed out so far.
    consumed: usize,
    /// Rows handed out when the caller last took the progress.
    committed: usize,
}

#[derive(Debug)]
struct Rows {
    /// As stored (dictionaries kept), in time order.
    stored: RecordBatch,
    /// In the table's logical schema, in time order.
    logical: RecordBatch,
}

impl Source {
    fn times<'a>(&'a self, table: &EventTable) -> &'a [i64] {
        self.rows.as_ref().map_or(&[], |rows| table.times(&rows.logical))
    }

    fn head(&self, table: &EventTable) -> Option<i64> {
        self.times(table).get(self.consumed).copied()
    }
}

/// What a batch became since the last [`TimeMerge::take_progress`].
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// The batch as the hot tier holds it now.
    pub meta: BatchMeta,
    /// The rows not handed out, as stored; `None` when every row was.
    pub rest: Option<RecordBatch>,
}

/// Loads a batch as stored, given what the caller passed to the merge's
/// read calls (a database connection); `None` when it is gone.
pub(crate) type Loader<C> = fn(&C, &BatchMeta) -> Result<Option<RecordBatch>, StoreError>;

/// See the module documentation.
pub(crate) struct TimeMerge<'a, C> {
    table: &'a EventTable,
    unopened: VecDeque<BatchMeta>,
    open: Vec<Source>,
    load: Loader<C>,
}

impl<'a, C> TimeMerge<'a, C> {
    /// Merges `batches` (any order) of `table`, loading each with `load`
    /// when the stream reaches its first event.
    pub(crate) fn new(table: &'a EventTable, mut batches: Vec<BatchMeta>, load: Loader<C>) -> Self {
        batches.sort_by_key(|b| (b.min_time, b.seq));
        TimeMerge { table, unopened: batches.into(), open: Vec::new(), load }
    }

    /// The open source with the earliest next row, and that row's time.
    fn earliest(&self) -> Option<(usize, i64)> {
        self.open
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.head(self.table).map(|t| (i, t)))
            .min_by_key(|&(_, t)| t)
    }

    /// Opens every batch whose first event is not after the earliest next
    /// row of the open ones.
    fn open_due(&mut self, from: &C) -> Result<(), StoreError> {
        loop {
            let head = self.earliest().map(|(_, t)| t);
            match self.unopened.front() {
                Some(next) if head.is_none_or(|t| next.min_time <= t) => {}
                _ => return Ok(()),
            }
            let Some(meta) = self.unopened.pop_front() else { return Ok(()) };
            let Some(stored) = (self.load)(from, &meta)? else {
                tracing::debug!(seq = meta.seq, "a hot batch vanished while it was read");
                continue;
            };
            let stored = hot::sort_by_time(self.table, &stored)?;
            let logical = self.table.conform(&stored)?;
            let total = stored.num_rows();
            self.open.push(Source {
                meta,
                rows: Some(Rows { stored, logical }),
                total,
                consumed: 0,
                committed: 0,
            });
        }
    }

    /// The time of the next row, if any (batches are loaded from `from`).
    pub(crate) fn peek_time(&mut self, from: &C) -> Result<Option<i64>, StoreError> {
        self.open_due(from)?;
        Ok(self.earliest().map(|(_, t)| t))
    }

    /// The next rows in time order, all before `limit`: at most `max_rows`
    /// (at least one) of one batch, as a slice in the table's logical
    /// schema; `None` when no row before `limit` is left (batches are
    /// loaded from `from`).
    pub(crate) fn next_run(
        &mut self,
        from: &C,
        limit: i64,
        max_rows: usize,
    ) -> Result<Option<RecordBatch>, StoreError> {
        self.open_due(from)?;
        let Some((index, time)) = self.earliest() else { return Ok(None) };
        if time >= limit {
            return Ok(None);
        }
        // Rows of this batch may go until another batch's next row (ties
        // go either way) or the first event of one not opened yet.
        let mut bound = self.unopened.front().map_or(i64::MAX, |b| b.min_time);
        for (i, source) in self.open.iter().enumerate() {
            if i != index
                && let Some(head) = source.head(self.table)
            {
                bound = bound.min(head);
            }
        }
        let source = &mut self.open[index];
        let Some(rows) = &source.rows else { return Ok(None) };
        let times = &self.table.times(&rows.logical)[source.consumed..];
        let take = times.partition_point(|&t| t < limit && t <= bound).clamp(1, max_rows.max(1));
        let run = rows.logical.slice(source.consumed, take);
        source.consumed += take;
        if source.consumed == source.total {
            // The slices handed out keep what they need.
            source.rows = None;
        }
        Ok(Some(run))
    }

    /// What became of each batch since the last call (batches fully handed
    /// out are forgotten); from now on that is the hot tier's state.
    pub(crate) fn take_progress(&mut self) -> Vec<Progress> {
        let mut progress = Vec::new();
        for source in &mut self.open {
            if source.consumed == source.committed {
                continue;
            }
            let total = source.total;
            let rest = match &source.rows {
                Some(rows) if source.consumed < total => {
                    Some(rows.stored.slice(source.consumed, total - source.consumed))
                }
                _ => None,
            };
            progress.push(Progress { meta: source.meta.clone(), rest });
            source.committed = source.consumed;
            source.meta.rows = (total - source.consumed) as u64;
            if let Some(&first) = source.times(self.table).get(source.consumed) {
                source.meta.min_time = first;
            }
        }
        self.open.retain(|s| s.consumed < s.total);
        progress
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::flows::{batch_from_flows, flows_from_batch};
    use crate::schema::flows_table;
    use crate::synthetic;

    fn meta(seq: i64, batch: &RecordBatch) -> BatchMeta {
        let (min_time, max_time) = flows_table().time_span(batch).expect("rows");
        BatchMeta { seq, min_time, max_time, rows: batch.num_rows() as u64, bytes: 0 }
    }

    #[test]
    fn overlapping_batches_come_out_in_time_order_and_progress_is_exact() {
        let flows: Vec<_> = (0..300).map(|i| synthetic::indexed_flow(1, i)).collect();
        // Three batches: two overlapping in time, one unsorted.
        let mut a: Vec<_> = flows.iter().step_by(2).cloned().collect();
        let b: Vec<_> = flows.iter().skip(1).step_by(2).cloned().collect();
        a.reverse();
        let batches: HashMap<i64, RecordBatch> =
            [(1, batch_from_flows(&a[..100])), (2, batch_from_flows(&b)), (3, batch_from_flows(&a[100..]))]
                .into_iter()
                .collect();
        let metas: Vec<_> = batches.iter().map(|(seq, b)| meta(*seq, b)).collect();
        let load: Loader<HashMap<i64, RecordBatch>> = |batches, m| Ok(batches.get(&m.seq).cloned());
        let mut merge = TimeMerge::new(flows_table(), metas, load);
        let limit = synthetic::indexed_flow(1, 200).timestamp_ns;
        let mut out = Vec::new();
        while let Some(run) = merge.next_run(&batches, limit, 7).expect("run") {
            assert!(run.num_rows() <= 7);
            out.extend(flows_from_batch(&run).expect("valid"));
        }
        assert_eq!(out, flows[..200], "every row before the limit, in order");
        let progress = merge.take_progress();
        let rest: usize = progress.iter().filter_map(|p| p.rest.as_ref()).map(RecordBatch::num_rows).sum();
        assert_eq!(rest, 100, "the rows after the limit stay");
        assert_eq!(merge.peek_time(&batches).expect("peek"), Some(limit));
        let mut tail = Vec::new();
        while let Some(run) = merge.next_run(&batches, i64::MAX, 1000).expect("run") {
            tail.extend(flows_from_batch(&run).expect("valid"));
        }
        assert_eq!(tail, flows[200..]);
        let done = merge.take_progress();
        assert!(done.iter().all(|p| p.rest.is_none()), "everything handed out");
    }
}
