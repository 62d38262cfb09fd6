"""Headless Droplet: submit a job, wait for it, import the result and save the .blend.

    blender -b scene.blend -P scripts/blender_generate.py -- --object Teapot --prompt "..." --save out.blend
    .venv-blender/bin/python scripts/blender_generate.py --open scene.blend -- --image in.png --prompt "..." \
        --server 127.0.0.1:8765 --save out.blend

The input is ``--object NAME`` (repeatable; rendered alone from an auto-framed front camera),
``--camera`` (the scene camera's render), ``--image FILE``, or ``--frames DIR|ZIP`` / ``--video FILE``
with ``--mode reconstruct``. Exit status: 0 on success, also when the job succeeded with warnings (e.g. an
orbit whose mesh failed: its rig is imported without a mesh and the warning goes to stderr), 1 when the job
fails (the reason on stderr), 2 for bad arguments.

A batch from one script, collected from another (the server keeps the jobs, whoever submitted them)::

    blender -b scene.blend -P scripts/blender_generate.py -- --object Teapot --prompt "..." --no-wait
    # prints: blender_generate: job 20250101-120000-1a2b3c4d submitted
    blender -b scene.blend -P scripts/blender_generate.py -- --attach 20250101-120000-1a2b3c4d --save out.blend
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="blender_generate", description=__doc__.splitlines()[0])
    parser.add_argument("--open", type=Path, help="open this .blend first (when run by a plain Python with bpy)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--object", action="append", metavar="NAME", help="object(s) to render alone and send")
    source.add_argument("--camera", action="store_true", help="send the scene camera's render")
    source.add_argument("--image", type=Path, help="send this image file")
    source.add_argument("--frames", type=Path, help="reconstruct mode: a folder (or zip) of orbit frames")
    source.add_argument("--video", type=Path, help="reconstruct mode: an orbit video")
    source.add_argument("--attach", metavar="ID", help="no new job: wait for this one (submitted before), import it")
    parser.add_argument("--no-wait", action="store_true", help="print the submitted job's id and exit")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default="", help="dense description of the object")
    prompt.add_argument("--prompt-file", type=Path, help="read the prompt from a text file")
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--mode", choices=("orbit", "video", "reconstruct"), default=None,
                        help="default: reconstruct with --frames/--video, else orbit")
    parser.add_argument("--server", help="server URL (default: add-on preferences, $DROPLET_URL, or 127.0.0.1:8765)")
    parser.add_argument("--token", help="bearer token (default: $DROPLET_TOKEN)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=6.0)
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--num-frames", type=int)
    parser.add_argument("--fps", type=int, help="video mode only")
    parser.add_argument("--view-align", action="store_true")
    parser.add_argument("--no-reconstruct", action="store_true", help="orbit mode: cameras only, no mesh")
    parser.add_argument("--elevation", type=float, help="orbit hint in degrees (else estimated)")
    parser.add_argument("--fov", type=float, help="orbit hint in degrees across the larger side (else estimated)")
    parser.add_argument("--estimate-orbit", action="store_true",
                        help="--object: estimate the orbit from the frames instead of taking the capture camera's "
                             "elevation, fov and distance (the mesh is then fitted to the objects' size)")
    parser.add_argument("--mesh-resolution", type=int)
    parser.add_argument("--face-budget", type=int)
    parser.add_argument("--download-dir", type=Path, help="where the job folder goes (default: //droplet or temp)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the job")
    parser.add_argument("--save", type=Path, help="write the .blend with the imported job here (not with --no-wait)")
    args = parser.parse_args(argv)
    if not (args.object or args.camera or args.image or args.frames or args.video or args.attach):
        parser.error("give an input (--object, --camera, --image, --frames or --video) or --attach ID")
    if args.no_wait and (args.attach or args.save):
        parser.error("--no-wait only submits: it takes neither --attach nor --save")
    if not args.no_wait and args.save is None:
        parser.error("--save is required (unless --no-wait)")
    return args


def job_kwargs(args: argparse.Namespace) -> dict:
    mode = args.mode or ("reconstruct" if args.frames or args.video else "orbit")
    orbit = {k: v for k, v in (("elevation", args.elevation), ("fov", args.fov)) if v is not None}
    mesh = {k: v for k, v in (("resolution", args.mesh_resolution), ("face_budget", args.face_budget)) if v}
    prompt = args.prompt_file.read_text() if args.prompt_file else args.prompt
    return dict(prompt=" ".join(prompt.split()), negative_prompt=args.negative_prompt, mode=mode, seed=args.seed,
                steps=args.steps, guidance_scale=args.guidance, width=args.width, height=args.height,
                num_frames=args.num_frames, fps=args.fps, view_align=args.view_align,
                reconstruct=mode == "orbit" and not args.no_reconstruct, orbit=orbit or None, mesh=mesh or None)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import bpy

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import droplet_blender as droplet
    from droplet_blender.client import DropletClientError
    from droplet_blender.params import JobParams

    def fail(message: str, code: int = 1) -> int:
        print(f"blender_generate: error: {message}", file=sys.stderr)
        return code

    if args.open:
        if not args.open.is_file():
            return fail(f"no such .blend: {args.open}", 2)
        bpy.ops.wm.open_mainfile(filepath=str(args.open))
    objects = []
    for name in args.object or []:
        if name not in bpy.data.objects:
            return fail(f"no object named {name!r} in {bpy.data.filepath or 'the scene'}", 2)
        objects.append(bpy.data.objects[name])
    try:
        if not args.attach:  # a bad value is exit 2 whether or not the server is up
            JobParams(**job_kwargs(args)).validate()
        if args.server or not args.frames:  # fail fast, before a possibly long render
            from droplet_blender.prefs import settings

            prefs = settings()
            prefs.url, prefs.token = args.server or prefs.url, args.token or prefs.token
            prefs.client().health()
        if args.attach:
            job = droplet.attach(args.attach, server=args.server, token=args.token, download_dir=args.download_dir)
            print(f"blender_generate: waiting for job {args.attach} …", flush=True)
        else:
            job = droplet.submit(
                image=args.image, object=objects or None, camera=args.camera, frames=args.frames, video=args.video,
                server=args.server, token=args.token, download_dir=args.download_dir,
                capture_hints=not args.estimate_orbit, **job_kwargs(args))
        if args.no_wait:
            return report_submitted(job, args.timeout)
        print(f"blender_generate: job submitted ({job.mode}), waiting …", flush=True)
        job = droplet.wait(job, timeout=args.timeout)
        collection = droplet.import_job(job)
    except DropletClientError as exc:  # a mistyped URL or input is the caller's; a dead server is not
        return fail(str(exc), 2 if exc.code in ("bad_url", "invalid_input") or exc.status in (400, 422) else 1)
    except ValueError as exc:
        return fail(str(exc), 2)
    except (droplet.DropletJobFailed, TimeoutError) as exc:
        return fail(str(exc))
    args.save.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(args.save.resolve()))
    print(f"blender_generate: imported {collection.name} from {job.folder}; saved {args.save}")
    for warning in filter(None, job.warnings.splitlines()):  # the job succeeded with less than asked (e.g. no mesh)
        print(f"blender_generate: warning: {warning}", file=sys.stderr)
    return 0


def report_submitted(job, timeout: float) -> int:
    """--no-wait: once the server has the job (and the download folder records it), print its id."""
    from droplet_blender import runtime

    def accepted() -> bool:
        state = runtime.latest.get(job.key)
        return state is not None and (bool(state.job_id) or state.finished)

    runtime.wait_until(accepted, timeout)
    state = runtime.latest.get(job.key)
    if state is None or not state.job_id:
        print(f"blender_generate: error: the job was not submitted: {state.error if state else 'timed out'}",
              file=sys.stderr)
        return 1
    print(f"blender_generate: job {state.job_id} submitted", flush=True)
    return 0


if __name__ == "__main__":
    if Path(sys.argv[0]).name == Path(__file__).name:  # a plain Python with the bpy module: all arguments are ours
        argv = [a for a in sys.argv[1:] if a != "--"]
    else:  # blender -b ... -P this.py -- ours
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    sys.exit(main(argv))
