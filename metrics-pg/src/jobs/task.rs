//! A spawned task aborted when its handle is dropped, so a job's helper
//! tasks never outlive the job.

/// A spawned task that is aborted when its handle is dropped: a cancelled
/// run (the scheduler stopping) must not leave hour tasks running on. The
/// aborted task drops its open transaction, which rolls back.
#[derive(Debug)]
pub(crate) struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> AbortOnDrop<T> {
    pub(crate) fn spawn(f: impl Future<Output = T> + Send + 'static) -> Self {
        Self(tokio::spawn(f))
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = T;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|done| match done {
                Ok(v) => v,
                // A panic in the task is a panic of the run, as before the spawn.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Only our Drop aborts the task, and then nobody polls it.
                Err(e) => unreachable!("rollup task cancelled while awaited: {e}"),
            })
    }
}
