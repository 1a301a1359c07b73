"""``promptseg serve``: the web viewer -- draw a box, see the mask, propagate, correct, save."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  # the bundled CT: open the printed URL, pick lung1_image.nrrd, drag a box on the tumour
  promptseg serve --data promptseg/data

  # several folders, a fixed token, exports kept in ./segmentations
  promptseg serve --data /scans/ct --data /scans/mr --token "$(openssl rand -hex 16)" --output segmentations

  # on a remote workstation: serve there, tunnel the port, open the URL on your laptop
  ssh -L 8765:127.0.0.1:8765 workstation     # then, on the workstation:
  promptseg serve --data /scans              # open the printed http://127.0.0.1:8765/?token=... locally

security: the server listens on 127.0.0.1 only (use --host to change that and mind who can reach it),
opens files only inside the --data folders, and every API call needs the token of the printed URL
(--token, else $PROMPTSEG_TOKEN, else a random one).
"""


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="the interactive web viewer (prompt, propagate, correct, save in the browser)",
        description="Serve the web viewer and its HTTP API. Open the printed URL in a browser.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    p.add_argument("--data", metavar="DIR", action="append", required=True,
                   help="a folder the viewer may open scans from (repeatable); nothing outside is readable")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default 8765)")
    p.add_argument("--token", help="API token (default: $PROMPTSEG_TOKEN, else a random one)")
    p.add_argument("--no-token", action="store_true", help="no token check (only behind another gate)")
    p.add_argument("--output", metavar="DIR", help="folder exports are written to (default: download only)")
    p.add_argument("--upload-limit", type=float, default=0, metavar="MB",
                   help="accept uploaded scans up to this size in MB (default 0: uploads off)")
    p.add_argument("--idle-timeout", type=float, default=60, metavar="MIN",
                   help="close sessions unused for this many minutes (default 60)")
    p.add_argument("--max-sessions", type=int, default=16, help="sessions open at once (default 16)")
    p.add_argument("--cache-dir", metavar="DIR", help="keep slice embeddings on disk here (a reopened scan is instant)")
    p.add_argument("--cache-mb", type=int, default=1024, help="memory for slice embeddings, MB (default 1024)")
    md = p.add_argument_group("model")
    md.add_argument("--model", default="litemedsam", help="model to serve (promptseg models lists them)")
    md.add_argument("--checkpoint", metavar="PATH", help="weights file, for models that need one")
    md.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    md.add_argument("--runtime", default="auto", help="image-encoder runtime: auto, torch, torch-jit, onnxruntime, openvino")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    import uvicorn

    from ..errors import PromptsegError
    from ..server import Settings, create_app
    from ..server.settings import DEFAULT_HOST, DEFAULT_PORT

    if args.no_token and args.token:
        raise PromptsegError("give --token or --no-token, not both")
    token = None if args.no_token else Settings.resolve_token(args.token)
    settings = Settings(
        data_dirs=[Path(d) for d in args.data],
        token=token,
        upload_limit=int(args.upload_limit * 1024 * 1024),
        idle_timeout=args.idle_timeout * 60,
        max_sessions=args.max_sessions,
        output_dir=Path(args.output).resolve() if args.output else None,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        cache_bytes=args.cache_mb * 1024 * 1024,
        models=(args.model,),
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        device=args.device,
        runtime=args.runtime,
    )
    host, port = args.host or DEFAULT_HOST, args.port or DEFAULT_PORT
    app = create_app(settings)
    print(f"promptseg viewer: loading {args.model} ...", flush=True)
    app.state.store.warm_up()
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"promptseg viewer: open {url}", flush=True)
    print(f"  data folders: {', '.join(str(d) for d in settings.data_dirs)}; press Ctrl+C to stop", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
