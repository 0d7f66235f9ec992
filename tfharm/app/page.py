"""The Gradio page: the demo composites on top, the inputs on the left, the result on the right.

Element ids (elem_id) are the page's interface for tests/browser.py: examples, photo,
mask, model, system, correction, run, compare, detection, used_mask, downloads, summary. The
labels that name a system's parts are its own (handling.words) and follow the model choice.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry or version check
import gradio as gr  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position

from tfharm.app import handling  # pylint: disable=g-import-not-at-top,wrong-import-position

TITLE = "tfharm: harmonise a photo"
# System fonts only: the default theme loads its fonts from a web font service, and the page
# must work (and stay) on this machine.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])
_INTRO = """# tfharm: harmonise a photo
Upload a composite photo (JPEG or PNG). Mask-free, the model finds where the luminance looks
wrong and corrects that region; with a mask (white = harmonise), your mask says where. The
result has the pixels of `python -m tfharm.harmonise` with the same `--model` (the result's
summary names it).
"""


def _uploaded_path(payload) -> str | None:
  """The uploaded file of an image input, as the click event gets it with preprocess=False:
  gr.Image's own preprocessing opens the upload with Pillow before the handler runs, so a file
  that is not an image would fail inside Gradio with a generic error; the handler decodes it
  as the CLI does instead, and says what is wrong."""
  if payload is None or isinstance(payload, str):
    return payload
  return payload.get("path") if isinstance(payload, dict) else getattr(payload, "path", None)


def make_handler(app: handling.App):
  """The click handler: Result -> the page's outputs; UploadError -> a message on the page."""

  def harmonise(image, mask, system, correction, model=None, progress=gr.Progress()):
    model = model or app.model
    said = handling.words(model) if model in app.choices else None
    if said and not app.loaded(model):  # its first request loads it (App.run, under its lock)
      progress(None, desc=said.loading)
    elif said:
      progress(None, desc=said.working)
    try:
      r = app.run(_uploaded_path(image), _uploaded_path(mask), system, correction, model)
    except handling.UploadError as e:
      logging.warning("refused an upload: %s", e)
      # duration None: the message stays until closed, a user may look away while it runs.
      raise gr.Error(str(e), duration=None, print_exception=False) from None
    except Exception:  # pylint: disable=broad-except  (the page shows a sentence, the log the trace)
      logging.exception("harmonising failed")
      raise gr.Error("the model failed on this image; the server log has the details",
                     duration=None, print_exception=False) from None
    return ((r.before_path, r.harmonised_path), r.overlay_path, r.mask_path,
            [r.harmonised_path, r.mask_path], r.summary)

  return harmonise


def relabel(model: str):
  """The labels that name system `model`'s parts: the mask-free choice, the map, the mask."""
  said = handling.words(model)
  return (gr.Radio(choices=[(said.mask_free, handling.MASK_FREE),
                            (handling.WITH_MASK, handling.WITH_MASK)]),
          gr.Image(label=said.detection), gr.Image(label=said.used_mask))


def build_page(app: handling.App, example_rows: list[list[str]]) -> gr.Blocks:
  # delete_cache: Gradio's copies of uploads and results older than an hour, checked hourly.
  with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as page:
    gr.Markdown(_INTRO)
    examples = gr.Dataset(
        components=[gr.Image(visible=False)], samples=[[row[0]] for row in example_rows],
        type="index", layout="gallery", visible=bool(example_rows), elem_id="examples",
        label="Demo composites: click one to load it, with its ground-truth mask (used only "
              "by the mask system)")
    with gr.Row():
      with gr.Column(scale=1):
        photo = gr.Image(label="Photo (JPEG or PNG)", sources=["upload"], type="filepath",
                         height=320, elem_id="photo")
        mask = gr.Image(label="Mask (optional; white = harmonise, same size as the photo)",
                        sources=["upload"], type="filepath", height=180, elem_id="mask")
        said = handling.words(app.model)
        model = gr.Radio([(handling.words(name).title, name) for name in app.choices],
                         value=app.model, label="Model", elem_id="model",
                         info="the default loads at start, another on its first use",
                         visible=len(app.choices) > 1)
        system = gr.Radio([(said.mask_free, handling.MASK_FREE),
                           (handling.WITH_MASK, handling.WITH_MASK)],
                          value=handling.MASK_FREE, label="System", elem_id="system")
        correction = gr.Radio(
            list(app.modules), value=next(iter(app.modules)), label="Correction",
            info="l_moments: the object's L* moved onto the predicted mean and contrast; "
                 "residual: the network's upsampled change added", elem_id="correction")
        run = gr.Button("Harmonise", variant="primary", elem_id="run")
      with gr.Column(scale=2):
        compare = gr.ImageSlider(label="Before / after (drag the handle)", format="png",
                                 max_height=520, elem_id="compare")
        with gr.Row():
          detection = gr.Image(label=said.detection, format="png", interactive=False,
                               height=300, elem_id="detection")
          used_mask = gr.Image(label=said.used_mask, format="png", interactive=False,
                               height=300, elem_id="used_mask")
        downloads = gr.File(label="Download (PNG)", file_count="multiple", interactive=False,
                            height=120, elem_id="downloads")
        summary = gr.Markdown(elem_id="summary")
    examples.click(lambda i: tuple(example_rows[i]), inputs=examples, outputs=[photo, mask])
    model.change(relabel, inputs=model, outputs=[system, detection, used_mask])
    run.click(make_handler(app), inputs=[photo, mask, system, correction, model],
              outputs=[compare, detection, used_mask, downloads, summary], preprocess=False,
              concurrency_limit=1)
  return page


def launch(page: gr.Blocks, app: handling.App, example_rows: list[list[str]], host: str,
           port: int, max_megabytes: float) -> str:
  """Starts serving `page` (one request at a time) without blocking; returns its URL.

  Gradio serves every file under an allowed path (`/gradio_api/file=...`), so the allowed
  paths are the example files themselves and the results folder, never the examples'
  folder: `--examples_dir=.` served `.git/config` and anything else under it."""
  allowed = [os.path.abspath(app.work_dir)]
  allowed += [os.path.abspath(path) for row in example_rows for path in row if path]
  page.queue(default_concurrency_limit=1)
  _, url, _ = page.launch(
      server_name=host, server_port=port, prevent_thread_lock=True, share=False,
      ssr_mode=False, mcp_server=False, quiet=True, footer_links=[], run_history=False,
      max_file_size=f"{max_megabytes:g}mb", theme=THEME, allowed_paths=allowed)
  return url
