//! The namespace holder: a child process (`rnet-bench --hold-netns`) that
//! creates container namespaces on request and keeps them, so that the
//! benchmark's runtime side holds no handle on them.
//!
//! Why: a runtime pins its containers' namespaces by bind mount
//! (`/run/netns/...`) and keeps no descriptor open for each. The lab
//! fixtures hold every namespace by an open descriptor instead, and with
//! 1000 of them every plugin spawn copies that descriptor table and every
//! `exec` closes it again (`do_close_on_exec`, `filp_flush`: 0.1–0.2 ms per
//! spawn here), a cost that is the benchmark's, not the plugin's. The
//! holder keeps the descriptors in another process; the plugins open the
//! namespaces by `/proc/<holder>/fd/<n>`. It exits when its stdin closes,
//! so its namespaces go with the benchmark however that ends (a bind mount
//! would outlive a killed benchmark).

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The holder's side: one line in (`new`), one line out (the path), until
/// stdin ends.
pub fn serve() -> Result<()> {
    let mut held = Vec::new();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.context("reading the holder's requests")?;
        match line.trim() {
            "new" => {
                let ns = rnet_netns::NetNs::new_unnamed()
                    .context("creating a container namespace in the holder")?;
                writeln!(out, "{}", ns.path().display())?;
                out.flush()?;
                held.push(ns);
            }
            "" => {}
            other => bail!("namespace holder: unknown request {other:?}"),
        }
    }
    drop(held);
    Ok(())
}

/// The benchmark's handle on a holder process.
pub struct Holder {
    child: Child,
    to: Option<ChildStdin>,
    from: BufReader<ChildStdout>,
}

impl Holder {
    /// Starts `rnet-bench --hold-netns` (this executable).
    pub fn start() -> Result<Holder> {
        let exe = std::env::current_exe().context("locating rnet-bench")?;
        let mut child = Command::new(exe)
            .arg("--hold-netns")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the namespace holder")?;
        let to = child.stdin.take().context("holder stdin")?;
        let from = BufReader::new(child.stdout.take().context("holder stdout")?);
        Ok(Holder {
            child,
            to: Some(to),
            from,
        })
    }

    /// A new container namespace, as the path plugins open it.
    pub fn new_netns(&mut self) -> Result<PathBuf> {
        let to = self.to.as_mut().context("the namespace holder is closed")?;
        writeln!(to, "new").context("asking the namespace holder")?;
        to.flush()?;
        let mut line = String::new();
        self.from
            .read_line(&mut line)
            .context("reading from the namespace holder")?;
        let p = line.trim();
        if p.is_empty() {
            bail!("the namespace holder ended (see its error above)");
        }
        Ok(PathBuf::from(p))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Closing its stdin ends it; wait, so that its namespaces are gone
        // when this returns.
        drop(self.to.take());
        let _ = self.child.wait();
    }
}
