"""The ensemble widget: pick labels, framework, members, epochs and worker profile; see the cost; train.

    from posehub.ensemble.widget import EnsembleWidget
    EnsembleWidget()

Before submitting it shows the estimated cost (:func:`posehub.ensemble.estimate`) and the budget left
(the cost service). Submitting starts a Dask cluster through Dask Gateway with the chosen worker
profile (the gateway refuses one over the budget or the limits, and the widget shows its sentence),
scales it to one worker per member and runs :func:`posehub.ensemble.train_ensemble` on it. While it
runs: a progress bar per member, the log's last lines, the cost so far, Cancel. At the end: the table
of members vs consensus, a plot, and where the results are; the cluster is shut down. Then "Label next
frames" writes the video frames the members disagree on most as a project for the tool that trained them
(:func:`posehub.pose.labelling.label_next_project`: a SLEAP ``.slp``, a DeepLabCut project folder; in the
ensemble's folder, or in ``~/label-next/<ensemble>/`` when that is a bucket), and "Open in Desktop" opens it
in that tool on the workspace's desktop (:func:`posehub.desktop.open_project`).

Everything slow runs in a background thread, so the notebook (and Cancel) stays responsive; a bad field
gets a message and starts nothing (:func:`posehub.ensemble.form.check`).
"""

from __future__ import annotations

import html
import io
import threading
import time

import ipywidgets as w

from ..pose.labelling import NO_VIDEO
from . import form
from .estimate import estimate

CSS = "posehub-ens"
LABEL_PATTERNS = ("**/CollectedData_*.csv", "**/*.slp")
VIDEO_PATTERNS = ("**/*.mp4", "**/*.avi", "**/*.mov")


def find_files(patterns, limit: int = 50) -> list[tuple[str, tuple[str, str]]]:
    """(label, (bucket, path)) of files matching ``patterns`` in the workspace's buckets."""
    from .. import storage

    out = []
    try:
        buckets = storage.buckets()
    except Exception:  # noqa: BLE001 - outside a workspace: the user types a path instead
        return out
    for name in buckets:
        try:
            fs, root = storage.filesystem(name), storage.bucket(name).root.rstrip("/")
            base = root.split("://", 1)[-1].rstrip("/")
            for pattern in patterns:
                for found in sorted(fs.glob(f"{root}/{pattern}"))[:limit]:
                    rel = str(found)[len(base):].lstrip("/") if str(found).startswith(base) else str(found)
                    out.append((f"{name}: {rel}", (name, rel)))
        except Exception:  # noqa: BLE001 - an unreachable bucket is skipped, the others are listed
            continue
    return out[:limit]


class EnsembleWidget(w.VBox):
    def __init__(self, *, framework: str = "sleap", members: int = 3, epochs: int = 3, params: dict | None = None,
                 video_frames: int = 4, gateway=None, shutdown_when_done: bool = True):
        self.params = dict(params or {})
        self.profiles = form.worker_profiles()
        self.gateway = gateway
        self.shutdown_when_done = shutdown_when_done
        self.ensemble = None
        self.cluster = None
        self.client = None
        self._started = 0.0
        labels = find_files(LABEL_PATTERNS)
        videos = find_files(VIDEO_PATTERNS)
        style = {"description_width": "120px"}
        layout = w.Layout(width="640px")
        self.labels = w.Dropdown(options=labels or [("(no labels found in your buckets)", None)],
                                 description="Labels", style=style, layout=layout)
        self.framework = w.Dropdown(options=[(v, k) for k, v in form.FRAMEWORKS.items()], value=framework,
                                    description="Framework", style=style, layout=layout)
        self.members = w.BoundedIntText(value=members, min=1, max=form.MAX_MEMBERS, description="Members (N)",
                                        style=style)
        self.epochs = w.BoundedIntText(value=epochs, min=1, max=10000, description="Epochs", style=style)
        self.profile = w.Dropdown(options=[(form.profile_label(p), p["slug"]) for p in self.profiles]
                                  or [("(no worker profile open to you)", None)],
                                  description="Worker profile", style=style, layout=layout)
        self.video = w.Dropdown(options=[("(none)", None)] + videos, value=videos[0][1] if videos else None,
                                description="Video", style=style, layout=layout)
        self.video_frames = w.BoundedIntText(value=video_frames, min=0, max=500, description="Video frames",
                                             style=style)
        self.estimate = w.HTML()
        self.budget = w.HTML()
        self.submit = w.Button(description="Train ensemble", button_style="primary", icon="play")
        self.cancel = w.Button(description="Cancel", button_style="danger", icon="stop", disabled=True)
        self.message = w.HTML()
        self.bars = w.VBox()
        self.cost = w.HTML()
        self.log_view = w.Textarea(layout=w.Layout(width="800px", height="140px"), disabled=True)
        self.table = w.HTML()
        self.plot = w.Image(format="png", layout=w.Layout(max_width="640px", display="none"))
        self.result = None  # the finished ensemble's EnsembleResult
        self.project = None  # where its frames to label next were written
        self.label_next = w.Button(description="Label next frames", icon="pencil",
                                   tooltip="Write the frames the members disagree on most as a labelling project")
        self.label_top = w.BoundedIntText(value=20, min=1, max=500, description="Frames",
                                          style={"description_width": "50px"}, layout=w.Layout(width="150px"))
        self.open_desktop = w.Button(description="Open in Desktop", icon="desktop", disabled=True)
        self.label_status = w.HTML()
        self.label_box = w.VBox([w.HBox([self.label_next, self.label_top, self.open_desktop]), self.label_status],
                                layout=w.Layout(display="none"))
        for name in ("labels", "framework", "members", "epochs", "profile", "video", "video_frames", "estimate",
                     "budget", "submit", "cancel", "message", "bars", "cost", "log_view", "table", "plot",
                     "label_next", "label_top", "open_desktop", "label_status"):
            getattr(self, name).add_class(f"{CSS}-{name.replace('_', '-')}")
        for field in (self.framework, self.members, self.epochs, self.profile, self.labels):
            field.observe(lambda _: self.update_estimate(), names="value")
        self.submit.on_click(lambda _: self.on_submit())
        self.cancel.on_click(lambda _: self.on_cancel())
        self.label_next.on_click(lambda _: self.on_label_next())
        self.open_desktop.on_click(lambda _: self.on_open_desktop())
        super().__init__([
            w.HTML("<b>Ensemble training</b>: N models with different seeds on Dask workers, combined "
                   "into a consensus; the frames they disagree on most are the ones to label next."),
            self.labels, self.framework, w.HBox([self.members, self.epochs]), self.profile,
            w.HBox([self.video, self.video_frames]), self.estimate, self.budget,
            w.HBox([self.submit, self.cancel]), self.message, self.bars, self.cost, self.log_view, self.table, self.plot,
            self.label_box,
        ])
        self.add_class(CSS)
        self.update_estimate()
        self.update_budget()

    # ------------------------------------------------------------ before submitting

    def request(self):
        return form.check(labels=self.labels.value, framework=self.framework.value, members=self.members.value,
                          epochs=self.epochs.value, profile=self.profile.value, profiles=self.profiles,
                          video=self.video.value, video_frames=self.video_frames.value, params=self.params)

    def update_estimate(self):
        req, errors = self.request()
        if errors:
            self.estimate.value = ""
            return
        try:
            est = estimate(req.framework, req.members, req.params, price_per_hour=float(req.profile["price_per_hour"]),
                           gpu=bool(req.profile.get("gpus")))
            self.estimate.value = f"<span>{html.escape(est.text())}</span>"
        except Exception as e:  # noqa: BLE001 - bad parameters are reported at submit
            self.estimate.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"

    def update_budget(self):
        from .. import account

        try:
            status = account.status()
        except Exception:  # noqa: BLE001
            status = None
        self.budget.value = html.escape(form.budget_line(status))
        return status

    def say(self, text: str, error: bool = False):
        color = "#b00" if error else "#333"
        self.message.value = f"<div style='color:{color}; white-space:pre-wrap'>{html.escape(text)}</div>"

    # ------------------------------------------------------------ submitting

    def on_submit(self):
        req, errors = self.request()
        if errors:
            self.say("Nothing was started:\n" + "\n".join(f"• {e}" for e in errors), error=True)
            return
        self.submit.disabled = True
        self.say("Starting a Dask cluster …")
        threading.Thread(target=self._run, args=(req,), daemon=True).start()

    def _gateway(self):
        if self.gateway is None:
            from dask_gateway import Gateway

            self.gateway = Gateway()
        return self.gateway

    def _run(self, req):
        from .. import storage
        from . import EnsembleError, train_ensemble

        try:
            gw = self._gateway()
            name = gw.submit(profile=req.profile["slug"])  # refused (budget, limits): the gateway says why
            self.cluster = gw.connect(name)
            self.cluster.scale(req.workers)
            self.client = client = self.cluster.get_client(set_as_default=False)
            bucket, path = req.labels
            video = dict(video=storage.url(req.video[0], req.video[1]), video_fs=storage.filesystem(req.video[0]),
                         video_frames=req.video_frames) if req.video and req.video_frames else {}
            self._bars(req)
            self.say(f"Cluster {name}: {req.workers} worker(s) of '{req.profile['display_name']}' starting; "
                     "members start as workers join.")
            self._started = time.monotonic()
            self.ensemble = train_ensemble(storage.url(bucket, path), req.framework, members=req.members,
                                           config=req.params, labels_fs=storage.filesystem(bucket), client=client,
                                           **video)
            self.cancel.disabled = False
            self.ensemble.on_update(lambda ens: self._progress(req))
            result = self.ensemble.results()
            self._progress(req)
            if any(p["state"] == "cancelled" for p in self.ensemble.progress):
                return
            self._finish(result)
        except (EnsembleError, ValueError) as e:
            self.say(f"Nothing was trained: {e}", error=True)
        except Exception as e:  # noqa: BLE001 - whatever went wrong, the user reads it here
            self.say(f"The ensemble failed: {type(e).__name__}: {e}", error=True)
        finally:
            self.cancel.disabled = True
            self.submit.disabled = False
            if self.cluster is not None and self.shutdown_when_done:
                try:
                    self.cluster.shutdown()
                except Exception:  # noqa: BLE001
                    pass
            self.update_budget()

    def _bars(self, req):
        self._bar = [w.IntProgress(value=0, min=0, max=req.epochs, description=f"member {i}",
                                   layout=w.Layout(width="420px")) for i in range(req.members)]
        self._state = [w.Label("queued") for _ in range(req.members)]
        for b in self._bar:
            b.add_class(f"{CSS}-bar")
        self.bars.children = [w.HBox([b, s]) for b, s in zip(self._bar, self._state)]

    def _progress(self, req):
        ens = self.ensemble
        if ens is None:
            return
        running = 0
        for i, p in enumerate(ens.progress):
            bar, state = self._bar[i], self._state[i]
            bar.max = max(int(p.get("epochs") or req.epochs), 1)
            bar.value = min(int(p.get("epoch") or 0), bar.max)
            if p["state"] == "done":
                bar.value = bar.max
            bar.bar_style = {"done": "success", "failed": "danger", "cancelled": "warning"}.get(p["state"], "info")
            attempt = f", attempt {p['attempt']}" if (p.get("attempt") or 1) > 1 else ""
            phase = f" ({p['phase']})" if p.get("phase") and p["state"] == "running" else ""
            state.value = f"{p['state']}{phase}: epoch {bar.value}/{bar.max}{attempt}"
            running += p["state"] in ("running", "retrying")
        workers = len(self.client.scheduler_info()["workers"]) if not ens.done() else 0
        self._worker_s = getattr(self, "_worker_s", 0.0)
        now = time.monotonic()
        self._worker_s += workers * (now - getattr(self, "_last", now))
        self._last = now
        self.cost.value = html.escape(f"Cost: {form.cost_so_far(self._worker_s, float(req.profile['price_per_hour']))}"
                                      f" · {running} member(s) training")
        self.log_view.value = "\n".join(ens.log_tail(12))

    def _finish(self, result):
        table = result.table()
        where = getattr(self.ensemble.spec, "dest", "")
        self.say(f"Done: consensus of {sum(1 for m in result.members if m.status == 'done')} member(s). "
                 f"Results, models and label_next.csv (the frames to label next) are in {where}")
        self.plot.value = _plot(table)
        self.plot.layout.display = "block"
        self.table.value = table.to_html(float_format=lambda x: f"{x:.2f}", classes=f"{CSS}-results")
        self.result, self.project = result, None
        self.open_desktop.disabled = True
        self.label_box.layout.display = "flex" if result.test is not None else "none"
        self.label_next.disabled = not result.video_frames
        self.say_label("" if result.video_frames else f"No frames to label next: {NO_VIDEO}.")

    # ------------------------------------------------------------ labelling the frames to label next

    def say_label(self, text: str, error: bool = False):
        color = "#b00" if error else "#333"
        self.label_status.value = f"<div style='color:{color}; white-space:pre-wrap'>{html.escape(text)}</div>"

    def on_label_next(self):
        if self.result is None:
            return
        self.label_next.disabled = True
        self.say_label("Writing the frames to label next …")
        self._label_thread = threading.Thread(target=self._write_project, args=(self.label_top.value,), daemon=True)
        self._label_thread.start()

    def _write_project(self, top: int):
        from ..pose.labelling import LabelsError, default_out, label_next_project, read, tool_of

        spec = getattr(self.ensemble, "spec", None)
        try:
            nf = read(self.result, top)
            tool = tool_of(nf.framework)
            out = default_out(nf, tool)
            name = "SLEAP .slp" if tool == "sleap" else "DeepLabCut project"
            if out.exists():
                self.project = out
                self.say_label(f"Already written: {out} ({name}; delete it to write it again).")
            else:
                self.project = label_next_project(nf, tool, out, top, video_fs=getattr(spec, "video_fs", None))
                home = (" The ensemble's folder is in a bucket, so the project is in your home, where the labelling "
                        "tools open it." if "://" in (nf.dest or "") else "")
                self.say_label(f"{len(nf.frames)} frame(s) to label next, with the consensus to correct, as a {name}: "
                               f"{self.project}.{home} Label them, save, then read them with "
                               f"posehub.pose.load_labels('{self.project}').")
            self.open_desktop.disabled = False
        except LabelsError as e:
            self.say_label(f"Nothing was written: {e}", error=True)
        except Exception as e:  # noqa: BLE001 - whatever went wrong, the user reads it here
            self.say_label(f"Writing the project failed: {type(e).__name__}: {e}", error=True)
        finally:
            self.label_next.disabled = False

    def on_open_desktop(self):
        if self.project is None:
            return
        from .. import desktop

        try:
            self.say_label(desktop.open_project(str(self.project)))
        except desktop.DesktopError as e:
            self.say_label(str(e), error=True)
        except Exception as e:  # noqa: BLE001
            self.say_label(f"Could not open {self.project}: {type(e).__name__}: {e}", error=True)

    def on_cancel(self):
        if self.ensemble is None:
            return
        self.cancel.disabled = True
        self.say("Cancelling: stopping every member …")

        def stop():
            stopped = self.ensemble.cancel()
            self.say("Cancelled: every training process stopped." if stopped
                     else "Cancelled; some workers did not confirm in time (the cluster is shut down anyway).")

        threading.Thread(target=stop, daemon=True).start()


def _plot(table) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    colors = ["#c44" if i == "consensus" else "#48a" for i in table.index]
    ax.bar(table.index, table["mean px"], color=colors)
    ax.set_ylabel("test error, mean (px)")
    ax.set_title("Ensemble members and their consensus")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
