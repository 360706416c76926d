"""The recipe at full scale: a published teacher pipeline and an image folder in, a one-step
SDXS-style model and its ControlNet out, stage by stage, each stage's result saved so that a run
can stop and go on.

    .venv/bin/python -m distill.run --config distill/configs/sdxs-512.json --data DATA --out OUT
                                    [--stages a,b,c,d] [--teacher DIR] [--teacher-controlnet DIR]

DATA is an image folder with metadata.jsonl ({"file_name", "text"} per line). The teacher is a
StableDiffusionPipeline folder (the recipe's "teacher" field or --teacher). Stages not listed in
--stages are loaded from OUT (a_decoder/, b_unet/, c_unet/, d_controlnet/), so `--stages c,d`
resumes after b. OUT/model and OUT/model-canny are the exported folders the C engine loads.
The toy run (distill/toy/run.py) does the same on generated data with a teacher it trains itself.
"""
import argparse
import os
import shutil
import sys


def _load_or_run(path, load, run, name, stages):
    """The stage's result: trained when its letter is in stages, else read from path."""
    from distill.common import log
    if name in stages:
        out = run()
        return out
    if not os.path.isdir(path):
        raise SystemExit(f"stage {name} is not in --stages and {path} does not exist")
    log(f"stage {name}: loading {path}")
    return load(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="a recipe JSON (distill/config.py fields)")
    ap.add_argument("--data", required=True, help="image folder with metadata.jsonl")
    ap.add_argument("--out", required=True)
    ap.add_argument("--stages", default="a,b,c,d")
    ap.add_argument("--teacher", help="teacher pipeline folder (overrides the config)")
    ap.add_argument("--teacher-controlnet", help="a trained teacher ControlNet folder; without "
                                                 "one stage d trains it first")
    ap.add_argument("--max-items", type=int, help="use only the first N images of DATA")
    args = ap.parse_args(argv)

    import torch
    from diffusers import AutoencoderTiny, ControlNetModel, UNet2DConditionModel

    from distill import compress, controlnet, decoder, export, onestep
    from distill.common import device_of, log, setup_runtime
    from distill.components import TextEncoder
    from distill.config import Recipe
    from distill.data import FolderData

    r = Recipe.load(args.config)
    teacher_dir = args.teacher or r.teacher
    if not teacher_dir:
        ap.error("no teacher: give --teacher or set 'teacher' in the config")
    stages = set(s.strip() for s in args.stages.split(",") if s.strip())
    if not stages <= {"a", "b", "c", "d"}:
        ap.error(f"--stages takes letters a, b, c, d; got {args.stages}")
    rt = r.runtime
    setup_runtime(rt.seed, rt.threads, rt.deterministic)
    dev = device_of(rt.device)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    losses_csv = os.path.join(out, "losses.csv")
    with open(os.path.join(out, "recipe.json"), "w") as f:
        f.write(r.to_json())

    pipe = export.load_pipeline(teacher_dir)
    text = TextEncoder(pipe.tokenizer, pipe.text_encoder.to(dev))
    t_unet, t_vae = pipe.unet.to(dev), pipe.vae.to(dev)
    sched_cfg = pipe.scheduler.config
    data = FolderData(args.data, r.resolution, args.max_items)
    lat_shape = (t_unet.config.in_channels, r.resolution // 8, r.resolution // 8)
    log(f"teacher {teacher_dir}, {len(data)} images at {r.resolution}, stages {sorted(stages)}")

    def save(model, name):
        model.save_pretrained(os.path.join(out, name), safe_serialization=True)
        return model

    s_vae = _load_or_run(
        os.path.join(out, "a_decoder"), AutoencoderTiny.from_pretrained,
        lambda: save(decoder.distill_decoder(t_vae, data, r.decoder, rt, losses_csv),
                     "a_decoder"), "a", stages)
    s_unet = _load_or_run(
        os.path.join(out, "b_unet"), UNet2DConditionModel.from_pretrained,
        lambda: save(compress.compress_unet(t_unet, text, sched_cfg, data, r.unet, rt,
                                            losses_csv, vae=t_vae)[0], "b_unet"), "b", stages)

    def stage_c():
        c = r.one_step
        pairs = onestep.make_pairs(t_unet, text, sched_cfg, data, c.pairs, lat_shape,
                                   c.ode_steps, c.ode_guidance, c.pair_batch, rt)
        return save(onestep.train_one_step(s_unet, t_unet, text, sched_cfg, pairs, c, rt,
                                           losses_csv), "c_unet")
    s_unet = _load_or_run(os.path.join(out, "c_unet"), UNet2DConditionModel.from_pretrained,
                          stage_c, "c", stages)

    def stage_d():
        d = r.controlnet
        t_cn_dir = args.teacher_controlnet or r.teacher_controlnet
        if t_cn_dir:
            t_cn = ControlNetModel.from_pretrained(t_cn_dir).to(dev)
        else:
            t_cn = save(controlnet.train_teacher_controlnet(t_unet, text, sched_cfg, data, d, rt,
                                                            losses_csv, vae=t_vae),
                        "d_teacher_controlnet")
        s_cn, _, _ = controlnet.student_controlnet(t_cn, s_unet)
        pairs = onestep.make_pairs(t_unet, text, sched_cfg, data, d.pairs, lat_shape,
                                   d.ode_steps, d.ode_guidance, r.one_step.pair_batch, rt,
                                   controlnet=t_cn, seed_offset=707)
        return save(controlnet.train_student_controlnet(
            s_unet, s_cn, t_unet, t_cn, t_unet, text, sched_cfg, pairs, d,
            r.one_step.fm_weights, r.one_step.fm_feature_t, rt, losses_csv), "d_controlnet")
    s_cn = _load_or_run(os.path.join(out, "d_controlnet"), ControlNetModel.from_pretrained,
                        stage_d, "d", stages)

    model_dir = os.path.join(out, "model")
    if os.path.exists(model_dir):
        shutil.rmtree(model_dir)
    export.write_pipeline(model_dir, text.model.cpu(), s_unet.cpu(), s_vae.cpu(),
                          export.one_step_scheduler(sched_cfg),
                          tokenizer_dir=os.path.join(teacher_dir, "tokenizer"))
    export.write_controlnet(os.path.join(out, "model-canny"), s_cn.cpu())
    log(f"wrote {model_dir} and {model_dir}-canny")
    return 0


if __name__ == "__main__":
    sys.exit(main())
