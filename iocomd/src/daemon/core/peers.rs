//! The core loop's connection side: network events into the device endpoints, stream
//! events into the update state machine, and the streams' polling and frame transmission
//! (with a retry when a connection's queue was full).

use super::*;

impl Core {
    pub(super) fn on_net(&mut self, secure: bool, event: NetEvent) {
        match event {
            NetEvent::Connected { id, peer, handle } => {
                let (out, rx) = mpsc::channel(OUT_QUEUE);
                tokio::spawn(forward(handle, rx));
                let span = tracing::info_span!("conn", conn = id, %peer, tls = secure);
                span.in_scope(|| tracing::debug!("connected"));
                if self.peers.len() >= MAX_PEERS {
                    span.in_scope(|| {
                        tracing::warn!(limit = MAX_PEERS, "too many connections; refusing this one")
                    });
                    let _ = out.try_send(Out::Close("too many connections".into()));
                    return;
                }
                self.peers.insert(
                    id,
                    Peer {
                        addr: peer,
                        secure,
                        user: None,
                        out,
                        ep: None,
                        frame_size: 0,
                        dirty: false,
                        span,
                    },
                );
            }
            NetEvent::Conn { id, event } => self.on_conn_event(id, event),
            NetEvent::QueueFailed { id, error } => {
                tracing::warn!(conn = id, %error, "frame not queued");
            }
            NetEvent::Closed { id, reason } => self.on_closed(id, reason),
        }
    }

    pub(super) fn on_conn_event(&mut self, id: u64, event: ConnEvent) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if let ConnEvent::Authenticated {
            peer,
            send_frame_size,
            ..
        } = &event
        {
            p.user = Some(peer.account_name());
            p.frame_size = *send_frame_size as usize;
            match DeviceEndpoint::new(self.device_cfg.clone()) {
                Ok(ep) => p.ep = Some(ep),
                Err(e) => {
                    tracing::error!(conn = id, error = %e, "cannot create the device blocks");
                    let _ = p.out.try_send(Out::Close(e.to_string()));
                    return;
                }
            }
            p.span
                .in_scope(|| tracing::info!(user = ?p.user, "controller connected"));
            self.published = None;
        }
        let Some(ep) = p.ep.as_mut() else {
            return;
        };
        match ep.handle(id, event) {
            Ok(out) => {
                for info in out.infos {
                    let _ = p.out.try_send(Out::Info(info));
                }
                p.dirty = true;
            }
            Err(e) => {
                p.span
                    .in_scope(|| tracing::warn!(error = %e, "bad data from the peer; closing"));
                let _ = p.out.try_send(Out::Close(e.to_string()));
            }
        }
    }

    pub(super) fn on_closed(&mut self, id: u64, reason: CloseReason) {
        let peer = self.peers.remove(&id);
        if let CloseReason::Rejected(r) = &reason {
            self.status.auth_fail = self.status.auth_fail.saturating_add(1);
            let user = match r {
                AuthRejection::EmptyName => String::new(),
                AuthRejection::UnknownUser { user, .. } | AuthRejection::WrongPassword { user } => {
                    user.clone()
                }
            };
            tracing::warn!(
                conn = id,
                peer = ?peer.as_ref().map(|p| p.addr),
                %user,
                reason = %r,
                failures = self.status.auth_fail,
                "authentication refused"
            );
        }
        if self.update.conn() == Some(id) {
            if matches!(self.update, Update::Receiving { .. }) {
                if self.update.fail_receiving(id).is_ok() {
                    self.publish_result(
                        Outcome::daemon(
                            DaemonCode::Interrupted,
                            format!(
                                "the controller's connection closed during the transfer ({reason})"
                            ),
                        ),
                        None,
                    );
                }
            } else {
                self.update.detach(id);
            }
        }
    }

    /// Polls every dirty connection's streams, publishes the status and transmits.
    pub(super) fn flush(&mut self) {
        let now = Instant::now();
        let ids: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.dirty && p.ep.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.poll_peer(id, now);
        }
        if let Update::Receiving { writer, .. } = &self.update {
            self.status.bytes = u32::try_from(writer.size()).unwrap_or(u32::MAX);
        }
        // Stream signals (tod_err, tod_state) go out before the status that explains them, so
        // a controller that sees a new `upd_seq` already has the final `tod_err`.
        self.transmit_dirty();
        if self.published.as_ref() != Some(&self.status) {
            for p in self.peers.values_mut() {
                if let Some(ep) = p.ep.as_mut() {
                    write_status(ep, &self.status);
                    p.dirty = true;
                }
            }
            self.published = Some(self.status.clone());
            self.transmit_dirty();
        }
    }

    /// Transmits the changes of every dirty connection (as much as its queue takes).
    pub(super) fn transmit_dirty(&mut self) {
        for (id, p) in self.peers.iter_mut() {
            if !p.dirty {
                continue;
            }
            let Some(ep) = p.ep.as_mut() else { continue };
            let room = p.out.capacity();
            if room == 0 {
                continue;
            }
            for f in ep.transmit(*id, p.frame_size, room) {
                let _ = p.out.try_send(Out::Data(f));
            }
            // Frames left over (the queue was full) keep the connection dirty: the loop comes
            // back after BACKLOG_RETRY instead of waiting for the next event.
            p.dirty = ep.node().has_pending(*id);
        }
    }

    pub(super) fn poll_peer(&mut self, id: u64, now: Instant) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let may_push = p.secure || self.settings.allow_plain_tcp_push;
        let Some(ep) = p.ep.as_mut() else { return };
        let mut sink = PushSink {
            conn: id,
            may_push,
            update: &mut self.update,
            settings: &self.settings,
            pushes: &mut self.pushes,
            note: None,
            now,
        };
        let events = ep.poll_streams(now, &mut sink, &mut NoSource);
        let note = sink.note.take();
        let span = p.span.clone();
        for ev in events {
            if ev.dir != Direction::ToDevice {
                continue;
            }
            self.on_stream_event(id, &span, ev.event, &note);
        }
    }

    pub(super) fn on_stream_event(
        &mut self,
        id: u64,
        span: &tracing::Span,
        ev: DeviceEvent,
        note: &Option<Note>,
    ) {
        match ev {
            DeviceEvent::Started { select } => {
                if self.update.conn() == Some(id) {
                    self.push_span = tracing::info_span!(parent: span, "push", n = self.pushes);
                    self.push_span
                        .in_scope(|| tracing::info!(select, "receiving a package"));
                    self.status.state = UpdState::Receiving;
                    self.status.progress = 0;
                    self.status.bytes = 0;
                    self.status.msg = "receiving".into();
                    self.notifier.status(self.narrate());
                }
            }
            DeviceEvent::Completed { bytes, crc, .. } => {
                let Ok(writer) = self.update.received(id) else {
                    return;
                };
                self.status.state = UpdState::Verifying;
                self.status.bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
                self.status.msg = "checking the received file".into();
                let push = self.update.push().unwrap_or(0);
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let result = finish_spool(writer, crc).await;
                    let _ = tx.send(CoreEvent::Spooled { push, result }).await;
                });
            }
            DeviceEvent::Failed { bytes, error, .. } => {
                let ours = matches!(&self.update, Update::Receiving { conn, .. } if *conn == id);
                if !ours {
                    if let Some(Note::Refused(code, msg)) = note {
                        span.in_scope(
                            || tracing::warn!(code = code.as_str(), %msg, "push refused"),
                        );
                        // A refusal of the device's own making is a result. `busy` would hide
                        // the running push's status, and `not-authorized` would let any
                        // unauthenticated peer overwrite the last result: those show only in
                        // the refused connection's tod_err.
                        if matches!(
                            code,
                            DaemonCode::NoSpace | DaemonCode::SpoolError | DaemonCode::BadSelect
                        ) {
                            self.publish_result(Outcome::daemon(*code, msg.clone()), Some(id));
                        }
                    }
                    return;
                }
                let outcome = match (&error, note) {
                    (StreamError::Checksum { .. }, _) => {
                        Outcome::daemon(DaemonCode::CrcMismatch, error.to_string())
                    }
                    (StreamError::Timeout, _) => Outcome::daemon(
                        DaemonCode::Interrupted,
                        format!("the transfer stalled after {bytes} bytes"),
                    ),
                    (
                        StreamError::Local(_),
                        Some(Note::WriteFailed(code, msg) | Note::Refused(code, msg)),
                    ) => Outcome::daemon(*code, msg.clone()),
                    _ => Outcome::daemon(
                        DaemonCode::Interrupted,
                        format!("the transfer was interrupted after {bytes} bytes: {error}"),
                    ),
                };
                let _ = self.update.fail_receiving(id);
                let timeout = matches!(error, StreamError::Timeout);
                self.publish_result(outcome, Some(id));
                if timeout && let Some(ep) = self.peers.get_mut(&id).and_then(|p| p.ep.as_mut()) {
                    let _ = ep.report(tod_err::TIMEOUT);
                }
            }
            DeviceEvent::Released => {}
        }
    }
}

pub(super) fn write_status(ep: &mut DeviceEndpoint, status: &UpdateStatus) {
    let Some(layout) = ep.info().block(crate::status::STATUS_BLOCK).cloned() else {
        return;
    };
    let node = ep.node_mut();
    let Some(ix) = node.find(crate::status::STATUS_BLOCK, None) else {
        return;
    };
    if let Some(block) = node.block_mut(ix)
        && let Err(e) = status.write(&layout, block)
    {
        tracing::error!(error = %e, "cannot write the status block");
    }
}

async fn forward(handle: ConnHandle, mut rx: mpsc::Receiver<Out>) {
    while let Some(out) = rx.recv().await {
        let r = match out {
            Out::Info(i) => handle.queue_system(SystemFrame::MblkInfo(i)).await,
            Out::Data(f) => {
                handle
                    .queue_data(f.mblk_id, f.addr, FrameFlags::from_bits(f.flags), f.payload)
                    .await
            }
            Out::Close(why) => handle.close(why).await,
        };
        if r.is_err() {
            return;
        }
    }
}
