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

That is the tab "Train ensemble"; the tab "Analyse videos" (:class:`AnalyseTab`) runs a trained model over
videos on gateway workers (:func:`posehub.analyze.analyze`): model (prefilled with a finished ensemble's best
member: its consensus is not one model), videos, output folder, worker profile and workers; the estimate and
the budget before anything starts, and a refusal when the estimate is more than the budget left; progress per
video, Cancel, results per video. Its "Watches" section lists the user's watched folders (pause, resume, watch
a new one) through :mod:`posehub.watch.client` (``watch_client=`` for another object with its functions). The
checks and tables are :mod:`posehub.analyze.form`'s pure functions.
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
ACSS = "posehub-ana"  # the "Analyse videos" tab
TITLES = ("Train ensemble", "Analyse videos")
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


class EnsembleWidget(w.Tab):
    """Two tabs: "Train ensemble" (this class's own fields) and "Analyse videos" (:class:`AnalyseTab`,
    ``self.analyse_tab``), which shares the gateway, the worker profiles and the budget."""

    def __init__(self, *, framework: str = "sleap", members: int = 3, epochs: int = 3, params: dict | None = None,
                 video_frames: int = 4, gateway=None, shutdown_when_done: bool = True, watch_client=None,
                 model: str = "", videos: str = ""):
        self.params = dict(params or {})
        self.profiles = form.worker_profiles()
        self.gateway = gateway
        self.shutdown_when_done = shutdown_when_done
        self.ensemble = None
        self.cluster = None
        self.client = None
        self._started = 0.0
        labels = find_files(LABEL_PATTERNS)
        found = find_files(VIDEO_PATTERNS)
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
        self.video = w.Dropdown(options=[("(none)", None)] + found, value=found[0][1] if found else None,
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
        self.train_tab = w.VBox([
            w.HTML("<b>Ensemble training</b>: N models with different seeds on Dask workers, combined "
                   "into a consensus; the frames they disagree on most are the ones to label next."),
            self.labels, self.framework, w.HBox([self.members, self.epochs]), self.profile,
            w.HBox([self.video, self.video_frames]), self.estimate, self.budget,
            w.HBox([self.submit, self.cancel]), self.message, self.bars, self.cost, self.log_view, self.table, self.plot,
            self.label_box,
        ])
        self.train_tab.add_class(f"{CSS}-train")
        self.analyse_tab = AnalyseTab(self, watch_client=watch_client, model=model, videos=videos)
        super().__init__(children=[self.train_tab, self.analyse_tab])
        for i, title in enumerate(TITLES):
            self.set_title(i, title)
        self.add_class(CSS)
        self.observe(self._on_tab, names="selected_index")
        self.update_estimate()
        self.update_budget()

    def _on_tab(self, change):
        if change["new"] == 1:
            self.analyse_tab.shown()

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
        line = html.escape(form.budget_line(status))
        self.budget.value = line
        if getattr(self, "analyse_tab", None) is not None:
            self.analyse_tab.budget.value = line
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
        self.analyse_tab.prefill(result)

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


class AnalyseTab(w.VBox):
    """The "Analyse videos" tab: every frame of videos through a trained model on Dask Gateway workers
    (:func:`posehub.analyze.analyze`), and the user's watched folders.

    "Estimate" checks the fields and the files (:func:`posehub.analyze.plan.make_plan`: a missing model, a glob
    matching nothing, an unreadable video give its message) and shows the frames, chunks, worker-hours and
    dollars (:func:`posehub.analyze.estimate.of_plan` at the profile's price) beside the budget left. "Analyse"
    does the same and, when the estimate fits the budget, starts a cluster of the chosen profile, scales it to
    the workers asked, runs the analysis and shows its progress per video, then the results; Cancel stops it.
    Nothing is started (no cluster, nothing charged) while a check fails. ``owner`` is the
    :class:`EnsembleWidget`: its gateway, worker profiles, budget and finished ensemble."""

    def __init__(self, owner, *, watch_client=None, model: str = "", videos: str = ""):
        from ..analyze import form as aform

        self.owner = owner
        self.aform = aform
        self.watches = aform.Watches(watch_client)
        self.analysis = None  # the running or finished posehub.analyze.Analysis
        self.cluster = None
        self.client = None
        self._thread = None
        self._cancel_thread = None
        self._cancel_confirmed = None  # set when Cancel was pressed: whether every chunk confirmed it stopped
        self._prefilled = ""
        style = {"description_width": "120px"}
        layout = w.Layout(width="640px")
        choices = [(form.profile_label(p), p["slug"]) for p in owner.profiles] or [
            ("(no worker profile open to you)", None)]
        self.model = w.Text(value=model, description="Model", placeholder="~/buckets/home/… (a PoseHub run folder)",
                            style=style, layout=layout)
        self.model_note = w.HTML()
        self.videos = w.Textarea(value=videos, description="Videos", placeholder="~/buckets/lab/videos/*.mp4 "
                                 "(a video, a folder or a glob; several: one per line)", style=style,
                                 layout=w.Layout(width="640px", height="52px"))
        self.out = w.Text(description="Output folder", placeholder="(optional: beside each video)", style=style,
                          layout=layout)
        self.overwrite = w.Checkbox(value=False, description="Replace earlier outputs", style=style)
        self.profile = w.Dropdown(options=choices, description="Worker profile", style=style, layout=layout)
        self.workers = w.BoundedIntText(value=2, min=1, max=aform.MAX_WORKERS, description="Workers", style=style)
        self.estimate_button = w.Button(description="Estimate", icon="calculator")
        self.estimate = w.HTML()
        self.budget = w.HTML(value=owner.budget.value)
        self.analyse = w.Button(description="Analyse", button_style="primary", icon="play")
        self.cancel = w.Button(description="Cancel", button_style="danger", icon="stop", disabled=True)
        self.message = w.HTML()
        self.progress = w.HTML()
        self.results = w.HTML()
        # watched folders
        self.watch_refresh = w.Button(description="Refresh", icon="refresh")
        self.watch_list = w.VBox()
        self.watch_message = w.HTML()
        names = []
        try:
            from .. import storage

            names = sorted(storage.buckets())
        except Exception:  # noqa: BLE001 - outside a workspace: the user types the bucket's name
            pass
        self.watch_bucket = w.Combobox(options=names, placeholder="a bucket of yours", description="Bucket",
                                       ensure_option=False, style=style, layout=layout)
        self.watch_prefix = w.Text(description="Prefix", placeholder="videos/incoming/", style=style, layout=layout)
        self.watch_model = w.Text(value=model, description="Model", placeholder="~/buckets/home/… (a run folder)",
                                  style=style, layout=layout)
        self.watch_profile = w.Dropdown(options=choices, description="Worker profile", style=style, layout=layout)
        self.watch_out = w.Text(description="Output prefix", placeholder="analyses/", style=style, layout=layout)
        self.watch_create = w.Button(description="Watch this folder", icon="eye")
        for name in ("model", "model_note", "videos", "out", "overwrite", "profile", "workers", "estimate_button",
                     "estimate", "budget", "analyse", "cancel", "message", "progress", "results", "watch_refresh",
                     "watch_list", "watch_message", "watch_bucket", "watch_prefix", "watch_model", "watch_profile",
                     "watch_out", "watch_create"):
            getattr(self, name).add_class(f"{ACSS}-{name.replace('_', '-')}")
        self.estimate_button.on_click(lambda _: self.on_estimate())
        self.analyse.on_click(lambda _: self.on_analyse())
        self.cancel.on_click(lambda _: self.on_cancel())
        self.watch_refresh.on_click(lambda _: self.on_watch_refresh())
        self.watch_create.on_click(lambda _: self.on_watch_create())
        for field in (self.model, self.videos, self.out, self.profile, self.workers, self.overwrite):
            field.observe(lambda _: setattr(self.estimate, "value", ""), names="value")  # an estimate of other fields
        super().__init__([
            w.HTML("<b>Batch video analysis</b>: every frame of your videos through a trained model, in chunks on "
                   "Dask workers; per video PoseHub's CSV, the tool's own file (DeepLabCut .h5, SLEAP .slp) and a "
                   "record of how it was made."),
            self.model, self.model_note, self.videos, self.out, self.overwrite, self.profile, self.workers,
            w.HBox([self.estimate_button, self.analyse, self.cancel]), self.estimate, self.budget, self.message,
            self.progress, self.results,
            w.HTML("<hr><b>Watches</b>: folders of your buckets whose new videos are analysed as they arrive."),
            self.watch_refresh, self.watch_list, self.watch_message,
            w.HTML("<b>Watch a folder</b>"),
            self.watch_bucket, self.watch_prefix, self.watch_model, self.watch_profile, self.watch_out,
            self.watch_create,
        ])
        self.add_class(ACSS)
        if not model and owner.result is not None:
            self.prefill(owner.result)

    # ------------------------------------------------------------ the model of a finished ensemble

    def prefill(self, result) -> None:
        """The model field from a finished ensemble (its folder: the analysis takes its members' consensus),
        unless the user typed another."""
        if self.model.value and self.model.value != self._prefilled:
            return
        try:
            from .. import storage

            buckets = storage.buckets()
        except Exception:  # noqa: BLE001 - outside a workspace: local folders only
            buckets = {}
        path, note = self.aform.model_from_ensemble(result, buckets)
        if path:
            self.model.value = self._prefilled = path
            if not self.watch_model.value:
                self.watch_model.value = path
        self.model_note.value = f"<span style='color:#555'>{html.escape(note)}</span>"

    # ------------------------------------------------------------ before starting

    def say(self, text: str, error: bool = False):
        color = "#b00" if error else "#333"
        self.message.value = f"<div style='color:{color}; white-space:pre-wrap'>{html.escape(text)}</div>"

    def prepare(self):
        """Check the fields and the files, estimate, check the budget: (request, plan, estimate), or None with the
        reason shown. Starts nothing."""
        from ..analyze.estimate import of_plan
        from ..analyze.plan import AnalyzeError, make_plan

        req, errors = self.aform.check(model=self.model.value, videos=self.videos.value, out=self.out.value,
                                       profile=self.profile.value, profiles=self.owner.profiles,
                                       workers=self.workers.value, overwrite=self.overwrite.value)
        if errors:
            self.estimate.value = ""
            self.say("Nothing was started:\n" + "\n".join(f"• {e}" for e in errors), error=True)
            return None
        denied = self.aform.access_problems(req.model, req.videos)
        if denied:
            self.estimate.value = ""
            self.say("Nothing was started: " + "; ".join(denied), error=True)
            return None
        try:
            plan = make_plan(req.model, req.videos, out=req.out, overwrite=req.overwrite)
            est = of_plan(plan, price_per_hour=req.profile.get("price_per_hour") or 0,
                          gpu=bool(req.profile.get("gpus")), workers=req.workers)
        except AnalyzeError as e:
            self.estimate.value = ""
            self.say(f"Nothing was started: {e}", error=True)
            return None
        status = self.owner.update_budget()
        notes = [n for n in (self.aform.unreadable_note(plan), self.aform.budget_note(status)) if n]
        self.estimate.value = "<br>".join(f"<span>{html.escape(t)}</span>" for t in [est.text(), *notes])
        refusal = self.aform.budget_refusal(est.cost, status)
        if refusal:
            self.say(refusal, error=True)
            return None
        return req, plan, est

    def on_estimate(self):
        if self.prepare() is not None:
            self.say("Press Analyse to start (a cluster of the chosen profile starts then).")

    # ------------------------------------------------------------ analysing

    def on_analyse(self):
        if self._thread is not None and self._thread.is_alive():
            self.say("An analysis is running: cancel it, or wait until it ends.", error=True)
            return
        ready = self.prepare()
        if ready is None:
            return
        self.analyse.disabled = True
        self.progress.value = self.results.value = ""
        self.say("Starting a Dask cluster …")
        self._thread = threading.Thread(target=self._run, args=ready, daemon=True)
        self._thread.start()

    def _run(self, req, plan, est):
        from ..analyze import AnalyzeError, analyze

        self.analysis = self.cluster = self.client = None
        self._cancel_thread = self._cancel_confirmed = None
        try:
            gw = self.owner._gateway()
            name = gw.submit(profile=req.profile["slug"])  # refused (budget, limits): the gateway says why
            self.cluster = gw.connect(name)
            self.cluster.scale(req.workers)
            self.client = self.cluster.get_client(set_as_default=False)
            self.analysis = analyze(req.model, req.videos, client=self.client, out=req.out, overwrite=req.overwrite)
            self.say(f"Cluster {name}: {req.workers} worker(s) of '{req.profile['display_name']}' starting; "
                     f"{len(self.analysis.plan.runnable)} video(s) in {est.chunks} chunk(s) start as workers join.")
            self._show_progress()
            self.analysis.on_update(lambda job: self._show_progress())
            self.cancel.disabled = False
            results = self.analysis.results()
            if self._cancel_thread is not None:
                self._cancel_thread.join(60)  # its confirmation is said here
            self._show_progress()
            self.results.value = self.aform.table_html(self.aform.result_rows(results), f"{ACSS}-results-table")
            self.say(self.aform.done_line(results, self._cancel_confirmed),
                     error=any(r.status == "failed" for r in results))
        except AnalyzeError as e:  # the files changed since the estimate
            self.say(f"Nothing was analysed: {e}", error=True)
        except Exception as e:  # noqa: BLE001 - whatever went wrong, the user reads it here
            self.say(f"The analysis failed: {type(e).__name__}: {e}", error=True)
        finally:
            self.cancel.disabled = True
            self.analyse.disabled = False
            if self.client is not None:
                try:
                    self.client.close()
                except Exception:  # noqa: BLE001
                    pass
            if self.cluster is not None and self.owner.shutdown_when_done:
                try:
                    self.cluster.shutdown()
                except Exception:  # noqa: BLE001
                    pass
            self.owner.update_budget()

    def _show_progress(self):
        if self.analysis is not None:
            self.progress.value = self.aform.table_html(self.aform.progress_rows(self.analysis.progress()),
                                                        f"{ACSS}-progress-table")

    def on_cancel(self):
        if self.analysis is None:
            return
        self.cancel.disabled = True
        self.say("Cancelling: stopping every chunk …")

        def stop():  # the analysis's thread says how it ended
            try:
                self._cancel_confirmed = bool(self.analysis.cancel())
            except Exception as e:  # noqa: BLE001
                self._cancel_confirmed = False
                self.say(f"Cancelling failed: {type(e).__name__}: {e}", error=True)

        self._cancel_thread = threading.Thread(target=stop, daemon=True)
        self._cancel_thread.start()

    # ------------------------------------------------------------ watched folders

    def shown(self):
        """The tab was opened: list the watched folders once."""
        if not self.watches.loaded:
            self.on_watch_refresh()

    def _say_watch(self):
        color = "#b00" if self.watches.error else "#333"
        self.watch_message.value = (f"<div style='color:{color}; white-space:pre-wrap'>"
                                    f"{html.escape(self.watches.message)}</div>")

    def _show_watches(self):
        rows = []
        for r in self.watches.rows():
            line = (f"{r['folder']} → {r['output'] or '(beside each video)'} · model {r['model']} · {r['profile']} · "
                    f"{r['state']} · {r['videos']}")
            text = w.HTML(html.escape(line),
                          layout=w.Layout(width="640px"))
            text.add_class(f"{ACSS}-watch")
            if r["action"]:
                b = w.Button(description=r["action"], icon="pause" if r["action"] == "Pause" else "play",
                             layout=w.Layout(width="110px"))
                b.add_class(f"{ACSS}-watch-{r['action'].lower()}")
                b.on_click(lambda _, i=r["id"], a=r["action"]: self.on_watch_action(i, a))
                rows.append(w.HBox([text, b]))
            else:
                rows.append(w.HBox([text]))
        self.watch_list.children = rows
        self._say_watch()

    def on_watch_refresh(self):
        self.watches.refresh()
        self._show_watches()

    def on_watch_action(self, watch_id, action: str):
        self.watches.act(watch_id, action)
        self._show_watches()

    def on_watch_create(self):
        ok = self.watches.create(bucket=self.watch_bucket.value, prefix=self.watch_prefix.value,
                                 model=self.watch_model.value, profile=self.watch_profile.value,
                                 profiles=self.owner.profiles, out_prefix=self.watch_out.value)
        self._show_watches()
        return ok


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
