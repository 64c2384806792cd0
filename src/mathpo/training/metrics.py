"""Training metrics of `mathpo train`: every Trainer log line appended to RUN/metrics.jsonl, and a PNG
plot (RUN/metrics.png) of loss, rewards (chosen/rejected), margins, reward accuracy and learning rate.
TensorBoard events come from transformers' own TensorBoardCallback (RUN/tensorboard)."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from ..records import JsonlAppender, read_jsonl

# What the plot shows, in this order (DPO keys; SFT runs show the ones they have)
PANELS = [("loss", ("loss",)), ("rewards", ("rewards/chosen", "rewards/rejected")),
          ("margin", ("rewards/margins",)), ("reward accuracy", ("rewards/accuracies",)),
          ("token accuracy", ("mean_token_accuracy",)), ("learning rate", ("learning_rate",))]


class MetricsLog(TrainerCallback):
    """Appends each log dict with its step; on a resumed run, rows past the resume step are dropped first."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kw):
        if not state.is_world_process_zero:
            return
        app = JsonlAppender(self.path)  # cuts a torn last line
        rows = app.rows()
        keep = [r for r in rows if r.get("step", 0) <= state.global_step]
        if len(keep) != len(rows):
            from ..records import write_jsonl

            write_jsonl(self.path, keep)

    def on_log(self, args, state, control, logs=None, **kw):
        if state.is_world_process_zero and logs:
            row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
            JsonlAppender(self.path).append([row])

    def on_train_end(self, args, state, control, **kw):
        if state.is_world_process_zero and self.path.is_file():
            plot(self.path, self.path.with_suffix(".png"))


def plot(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """Draw the training curves (rows with a `loss`, i.e. training logs) into png_path."""
    # the object API without pyplot: no global figure state, and a much faster import
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in read_jsonl(metrics_path) if "loss" in r]
    panels = [(title, [k for k in keys if any(k in r for r in rows)]) for title, keys in PANELS]
    panels = [(t, ks) for t, ks in panels if ks]
    if not rows or not panels:
        return None
    fig = Figure(figsize=(3.2 * len(panels), 2.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for k in keys:
            pts = [(r["step"], r[k]) for r in rows if k in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=k.split("/")[-1])
        ax.set_title(title)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    return Path(png_path)
