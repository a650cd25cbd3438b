//! A live recording that a debugger drives: the guest runs ahead of the
//! replay only when the replay reaches the end of what was recorded, so
//! reverse execution works back to the start of a session that is still
//! running (`run --gdb`).

use std::path::PathBuf;
use std::sync::Arc;

use vm::host::HostInput;
use vm::machine::{Console, Machine, StopReason};

use crate::error::Result;
use crate::model::TraceHeader;
use crate::reader::Trace;
use crate::record::{RecordSummary, Recorder};

/// A live recording the debugger drives: the guest runs ahead of the
/// replay only when the replay reaches the end of what was recorded.
pub struct Live {
    pub machine: Machine,
    recorder: Option<Recorder>,
    host: Box<dyn HostInput + Send>,
    console: Box<dyn Console + Send>,
    path: PathBuf,
    /// How the guest stopped, once it has.
    pub stop: Option<StopReason>,
    pub summary: Option<RecordSummary>,
}

impl Live {
    /// Starts recording `machine` (configured as `header` says) into `path`;
    /// nothing runs until the debugger asks.
    pub fn start(
        path: PathBuf,
        header: &TraceHeader,
        mut machine: Machine,
        host: Box<dyn HostInput + Send>,
        console: Box<dyn Console + Send>,
    ) -> Result<(Live, Arc<Trace>)> {
        let recorder = Recorder::start(&path, header, &mut machine)?;
        recorder.sync()?;
        let trace = Arc::new(Trace::open(&path)?);
        let live = Live {
            machine,
            recorder: Some(recorder),
            host,
            console,
            path,
            stop: None,
            summary: None,
        };
        Ok((live, trace))
    }

    /// Records `n` more instructions (fewer if the guest stops) and returns
    /// the trace as it now is; `None` once the guest has stopped.
    pub fn extend(&mut self, n: u64) -> Result<Option<Arc<Trace>>> {
        if self.stop.is_some() {
            return Ok(None);
        }
        let Some(rec) = self.recorder.as_mut() else {
            return Ok(None);
        };
        let target = self.machine.icount().saturating_add(n);
        let stop = rec.run(
            &mut self.machine,
            &mut *self.host,
            &mut *self.console,
            target,
            &mut |_| {},
        )?;
        if stop == StopReason::InsnLimit {
            rec.sync()?;
        } else if let Some(rec) = self.recorder.take() {
            self.summary = Some(rec.finish(&mut self.machine, &stop)?);
            self.stop = Some(stop);
        }
        Ok(Some(Arc::new(Trace::open(&self.path)?)))
    }
}
