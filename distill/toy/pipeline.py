"""The toy run's steps in order (distill/toy/run.py is the command that starts it):

  0. data      20,000 generated 64x64 scenes with captions
  1. teacher   AutoencoderTiny trained from scratch, then a CLIP text model and a U-Net trained
               together on its latents; written as a multi-step pipeline folder
  a. decoder   a tiny decoder distilled from the teacher's
  b. unet      the block-removed student U-Net, trained with output and feature distillation
  c. one step  teacher ODE pairs, feature matching on the straightened trajectory, segmented
               score distillation
  d. control   the teacher's edge ControlNet, then the student's, trained one-step
  export, evaluation (adherence of teacher and student, edge overlap), model card
"""
import json
import os
import shutil
import time

import numpy as np
import torch

from distill import (block_removal, compress, controlnet, decoder, eval_adherence,
                     eval_controlnet, export, flops, onestep, plot, teacher)
from distill.common import Noise, log, setup_runtime
from distill.components import TextEncoder, decode_latents, encode_latents
from distill.data import InMemoryData
from distill.toy import config as toy, shapes


def _save_grid(images, path, cols=8):
    from PIL import Image
    rows = len(images) // cols
    grid = np.concatenate([np.concatenate(list(images[r * cols:(r + 1) * cols]), 1)
                           for r in range(rows)], 0)
    Image.fromarray(grid).save(path)


def _timed(times, name, fn, *a, **kw):
    t0 = time.time()
    log(f"=== {name}")
    out = fn(*a, **kw)
    times[name] = round(time.time() - t0, 1)
    log(f"=== {name} done in {times[name]:.0f} s")
    return out


def build_teacher(out, data, rt, times, losses_csv, scale):
    """Trains the toy teacher and writes it to out/teacher (multi-step, DPM-Solver)."""
    from diffusers import AutoencoderTiny, DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    ae_cfg = toy.scaled_train(toy.TEACHER_AE_TRAIN, scale)
    vae = AutoencoderTiny(**toy.TEACHER_AE)
    _timed(times, "teacher_autoencoder", teacher.train_autoencoder, vae, data, rt=rt,
           log_path=losses_csv, **ae_cfg)
    with torch.no_grad():
        data.cache_latents(lambda x: encode_latents(vae, x))

    tok_dir = os.path.join(out, "tokenizer")
    export.write_tokenizer_files(tok_dir)
    text = TextEncoder(CLIPTokenizer.from_pretrained(tok_dir),
                       CLIPTextModel(CLIPTextConfig(**toy.TEXT_ENCODER)))
    unet = UNet2DConditionModel(**toy.TEACHER_UNET)
    ldm_cfg = toy.scaled_train(toy.TEACHER_LDM_TRAIN, scale)
    sched = DPMSolverMultistepScheduler(**toy.SCHEDULER)
    _timed(times, "teacher_ldm", teacher.train_ldm, unet, text, sched.config, data, rt=rt,
           log_path=losses_csv, **ldm_cfg)
    export.write_pipeline(os.path.join(out, "teacher"), text.model, unet, vae, sched)
    return text, unet, vae, sched


def evaluate_all(out, teacher_dir, student_dir, cn_dir, count, times):
    """Adherence of the multi-step teacher and the one-step student, the ControlNet's edge
    overlap; sample grids next to the numbers."""
    res = {}
    t0 = time.time()
    specs, prompts, truth = eval_adherence.eval_specs(count, toy.IMAGE_SIZE)
    seeds = list(range(count))
    tpipe = export.load_pipeline(teacher_dir)
    timgs = eval_adherence.generate_pipeline(tpipe, prompts, seeds,
                                             toy.TEACHER_SAMPLING["steps"],
                                             toy.TEACHER_SAMPLING["guidance"])
    res["teacher"] = eval_adherence.summarise(
        [eval_adherence.analyse(i, s) for i, s in zip(timgs, specs)])
    res["teacher"].update(steps=toy.TEACHER_SAMPLING["steps"],
                          guidance=toy.TEACHER_SAMPLING["guidance"])
    spipe = export.load_pipeline(student_dir)
    simgs = eval_adherence.generate_pipeline(spipe, prompts, seeds, 1, 0.0)
    res["student"] = eval_adherence.summarise(
        [eval_adherence.analyse(i, s) for i, s in zip(simgs, specs)])
    res["student"].update(steps=1, guidance=0.0)
    res["ground_truth"] = eval_adherence.summarise(
        [eval_adherence.analyse(i, s) for i, s in zip(truth, specs)])
    cn, cimgs, _ = eval_controlnet.evaluate(export.load_pipeline(student_dir, cn_dir), spipe,
                                            min(count, 100))
    res["controlnet"] = cn
    res["prompts"] = count
    _save_grid(np.concatenate([truth[:16], timgs[:16], simgs[:16], cimgs[:16]]),
               os.path.join(out, "samples.png"))
    times["evaluation"] = round(time.time() - t0, 1)
    return res


def run(args):
    setup_runtime(args.seed, args.threads, deterministic=True)
    r = toy.recipe(args.seed, args.threads)
    if args.scale != 1.0:
        r = toy.scaled(r, args.scale)
    rt = r.runtime
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    losses_csv = os.path.join(out, "losses.csv")
    if os.path.exists(losses_csv):
        os.remove(losses_csv)
    times = {}
    t_start = time.time()
    log(f"toy run: seed {args.seed}, {args.threads} threads, scale {args.scale}, out {out}")

    # 0. Data.
    n_images = args.images or max(512, int(toy.TRAIN_IMAGES * min(1.0, args.scale * 4)))
    specs, caps, images = _timed(times, "data", shapes.make_set, args.seed, n_images,
                                 toy.IMAGE_SIZE)
    data = InMemoryData(images, caps)

    # 1. Teacher.
    text, t_unet, t_vae, t_sched = build_teacher(out, data, rt, times, losses_csv, args.scale)
    noise_cfg = t_sched.config

    # a. Tiny decoder.
    s_vae = _timed(times, "a_decoder", decoder.distill_decoder, t_vae, data, r.decoder, rt,
                   losses_csv)

    # b. Block removal.
    s_unet, b_info = _timed(times, "b_unet", compress.compress_unet, t_unet, text, noise_cfg,
                            data, r.unet, rt, losses_csv)
    log(f"block removal: {b_info}")

    # c. One step.
    lat_shape = tuple(data.latents.shape[1:])
    c = r.one_step
    pairs = _timed(times, "c_pairs", onestep.make_pairs, t_unet, text, noise_cfg, data, c.pairs,
                   lat_shape, c.ode_steps, c.ode_guidance, c.pair_batch, rt)
    s_unet = _timed(times, "c_one_step", onestep.train_one_step, s_unet, t_unet, text,
                    noise_cfg, pairs, c, rt, losses_csv)

    # d. ControlNet.
    d = r.controlnet
    t_cn = _timed(times, "d_teacher_controlnet", controlnet.train_teacher_controlnet, t_unet,
                  text, noise_cfg, data, d, rt, losses_csv)
    s_cn, cn_copied, cn_kept = controlnet.student_controlnet(t_cn, s_unet)
    cn_pairs = _timed(times, "d_pairs", onestep.make_pairs, t_unet, text, noise_cfg, data,
                      d.pairs, lat_shape, d.ode_steps, d.ode_guidance, c.pair_batch, rt,
                      controlnet=t_cn, seed_offset=707)
    s_cn = _timed(times, "d_student_controlnet", controlnet.train_student_controlnet, s_unet,
                  s_cn, t_unet, t_cn, t_unet, text, noise_cfg, cn_pairs, d, c.fm_weights,
                  c.fm_feature_t, rt, losses_csv)

    # Export.
    student_dir = os.path.join(out, "student")
    cn_dir = os.path.join(out, "student-canny")
    export.write_pipeline(student_dir, text.model, s_unet, s_vae,
                          export.one_step_scheduler(noise_cfg))
    export.write_controlnet(cn_dir, s_cn)
    export.write_controlnet(os.path.join(out, "teacher-canny"), t_cn)

    # Evaluation.
    res = evaluate_all(out, os.path.join(out, "teacher"), student_dir, cn_dir,
                       args.eval_count, times)
    times["total"] = round(time.time() - t_start, 1)
    spipe = export.load_pipeline(student_dir, cn_dir)
    info = {
        "seed": args.seed, "threads": args.threads, "scale": args.scale,
        "train_images": n_images, "recipe": json.loads(r.to_json()),
        "teacher_training": {"autoencoder": toy.scaled_train(toy.TEACHER_AE_TRAIN, args.scale),
                             "ldm": toy.scaled_train(toy.TEACHER_LDM_TRAIN, args.scale),
                             "sampling": toy.TEACHER_SAMPLING},
        "block_removal": b_info,
        "controlnet_mapping": {"copied_tensors": len(cn_copied),
                               "initialised_tensors": len(cn_kept)},
        "seconds": times, "evaluation": res,
        "flops": flops.pipeline_flops(spipe.text_encoder, spipe.unet, spipe.vae),
        "flops_controlnet": flops.pipeline_flops(spipe.text_encoder, spipe.unet, spipe.vae,
                                                 spipe.controlnet)["controlnet"],
        "parameters": export.parameter_counts(spipe),
        "teacher_parameters": export.parameter_counts(export.load_pipeline(
            os.path.join(out, "teacher"))),
        "megabytes": {"model": export.folder_megabytes(student_dir),
                      "controlnet": export.folder_megabytes(cn_dir)},
    }
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump(info, f, indent=2)
    plot.write_svg(plot.read_csv(losses_csv), os.path.join(out, "loss_curves.svg"),
                   "toy run: loss per stage (moving average)")
    log(f"evaluation: {json.dumps(res)}")
    log(f"total {times['total']:.0f} s")

    if args.ship:
        ship(out, os.path.abspath(args.ship), info)


def ship(out, dst, info):
    """Copies the one-step model and its ControlNet to the shipped folders, with the card,
    the loss curves (CSV and SVG) and the sample grid."""
    cn_dst = dst + "-canny"
    for d in (dst, cn_dst):
        if os.path.exists(d):
            shutil.rmtree(d)
    shutil.copytree(os.path.join(out, "student"), dst)
    # The one-step scheduler is written afresh from export.py (runs made before the fix there
    # carried the teacher's DPM-Solver settings into it, which are not valid JSON).
    from diffusers import DDPMScheduler
    sched_dir = os.path.join(dst, "scheduler")
    teacher_sched = DDPMScheduler.from_pretrained(os.path.join(out, "teacher"),
                                                  subfolder="scheduler")
    shutil.rmtree(sched_dir)
    export.one_step_scheduler(teacher_sched.config).save_pretrained(sched_dir)
    shutil.copytree(os.path.join(out, "student-canny"), cn_dst)
    for name in ("losses.csv", "loss_curves.svg", "samples.png", "run.json"):
        shutil.copy(os.path.join(out, name), os.path.join(dst, name))
    from distill.toy import model_card  # read at the end: the card can be rewritten alone
    model_card.write(dst, cn_dst, info)
    log(f"shipped {dst} and {cn_dst}")
