"""The model card (README.md) of the shipped toy model, written from what the run recorded: run.json
and losses.csv in the model folder, plus the C engine's benchmark table when one is given.

    .venv/bin/python -m distill.toy.model_card weights/sdxs-tiny-shapes [--bench BENCH.txt]

The toy run writes the card when it ships the model; this command rewrites it from the folder
alone (after the engine's benchmark, say), so every number in the card comes from a file beside it.
"""
import argparse
import csv
import json
import os
import sys

from distill.toy import shapes

BENCH_FILE = "bench.txt"  # the engine's `sdxs bench` table, kept beside the card


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _loss_table(csv_path, points=5):
    """Per stage and loss: the mean over the first and last tenth of the steps and at a few
    points between (a table stands in for the plot; loss_curves.svg draws the same data)."""
    series = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            series.setdefault((row["stage"], row["name"]), []).append(float(row["value"]))
    lines = ["| stage | loss | " + " | ".join(f"{int(100 * k / (points - 1))}%"
                                              for k in range(points)) + " |",
             "|---|---|" + "---|" * points]
    for (stage, name), vals in series.items():
        if not any(vals):
            continue
        n = len(vals)
        w = max(1, n // 10)
        cells = []
        for k in range(points):
            centre = round(k * (n - 1) / (points - 1))
            lo = min(max(0, centre - w // 2), n - w)
            window = vals[lo:lo + w]
            cells.append(f"{sum(window) / len(window):.4g}")
        lines.append(f"| {stage} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _minutes(s):
    return f"{s / 60:.1f} min"


def render(info, losses_csv, bench_text=None, name="sdxs-tiny-shapes"):
    ev = info["evaluation"]
    r = info["recipe"]
    t = info["seconds"]
    tt = info["teacher_training"]
    p, tp = info["parameters"], info["teacher_parameters"]
    fl = info["flops"]
    cn = ev["controlnet"]
    student, teacher = ev["student"], ev["teacher"]
    gap = 100 * (teacher["adherence"] - student["adherence"])
    meets = student["adherence"] >= 0.80 and gap <= 10.0
    colours = ", ".join(shapes.COLOURS)
    out = []
    add = out.append
    add(f"# {name}: a one-step SDXS-style model of coloured shapes, trained here\n")
    add("The default model of `sdxs generate` and `sdxs serve`. It was made by the toy run of "
        "`distill/` (`.venv/bin/python -m distill.toy.run --out OUT --ship "
        f"weights/{name}`) on generated data only: a teacher latent-diffusion model trained "
        "from scratch, then the four SDXS stages (tiny decoder, block removal, one-step "
        "training, ControlNet). It draws 64x64 pictures of one or two flat shapes on a plain "
        "background in one U-Net step, without classifier-free guidance. It knows nothing "
        "else: for real pictures use the public SDXS checkpoints (`weights/fetch`).\n")
    add(f"`{name}-canny/` beside it is its edge ControlNet (Canny edges of a 64x64 image).\n")

    add("## Caption grammar\n")
    add("```\ncaption  := object [relation object] \" on a \" colour \" background\"\n"
        "object   := \"a \" colour \" \" shape\n"
        f"colour   := {' | '.join(shapes.COLOURS)}\n"
        f"shape    := {' | '.join(shapes.SHAPES)}\n"
        f"relation := {' | '.join(shapes.RELATIONS)}\n```\n")
    add(f"Examples: `a red circle above a blue square on a yellow background`, `a white triangle "
        f"on a black background`. Objects differ in colour from each other and from the "
        f"background. The colours are {colours}; the RGB values and the drawing rules are in "
        "`distill/toy/shapes.py`. Prompts outside the grammar give arbitrary pictures.\n")

    add("## Components\n")
    add("| part | this model | the teacher |\n|---|---|---|")
    add(f"| text encoder (CLIP text model, real 49,408-token vocabulary, 3 layers, 64 wide) | "
        f"{p['text_encoder']:,} | {tp['text_encoder']:,} (shared) |")
    add(f"| U-Net | {p['unet']:,} (2 levels, 1 resnet per down level, no mid block) | "
        f"{tp['unet']:,} (3 levels, 2 resnets, mid block) |")
    add(f"| AutoencoderTiny encoder | {p['vae_encoder']:,} | {tp['vae_encoder']:,} |")
    add(f"| AutoencoderTiny decoder | {p['vae_decoder']:,} | {tp['vae_decoder']:,} |")
    if "controlnet" in p:
        add(f"| ControlNet ({name}-canny) | {p['controlnet']:,} | |")
    add("")
    add(f"Operations per image (multiply-add = 2): text encoder {fl['text_encoder'] / 1e6:.1f} M, "
        f"U-Net {fl['unet'] / 1e6:.1f} M, decoder {fl['decoder'] / 1e6:.1f} M, total "
        f"{fl['total'] / 1e6:.1f} M; the ControlNet adds {info['flops_controlnet'] / 1e6:.1f} M. "
        f"Folder sizes: {info['megabytes']['model']:.1f} MB and "
        f"{info['megabytes']['controlnet']:.1f} MB (fp32 safetensors). Scheduler: "
        "EulerDiscrete, trailing spacing, one step at t = 999; `guidance_scale` 0.\n")

    add("## Training (the settings actually run)\n")
    add(f"Seed {info['seed']}, {info['threads']} PyTorch thread(s), CPU, fp32, "
        f"{info['train_images']:,} generated 64x64 images (scene i of seed s is "
        "`shapes.scene(s, i, 64)`). The full settings are in `run.json`; per stage:\n")
    ae, ldm = tt["autoencoder"], tt["ldm"]
    d, b, c, n = r["decoder"], r["unet"], r["one_step"], r["controlnet"]
    add("| stage | what | steps x batch | wall time |\n|---|---|---|---|")
    add(f"| teacher autoencoder | AutoencoderTiny from scratch, L1 + MSE on {ae['crop']}x"
        f"{ae['crop']} crops, lr {ae['lr']} | {ae['steps']} x {ae['batch']} | "
        f"{_minutes(t['teacher_autoencoder'])} |")
    add(f"| teacher LDM | U-Net and text model from scratch, epsilon loss, min-SNR "
        f"{ldm['min_snr_gamma']}, caption dropout {ldm['caption_dropout']}, EMA "
        f"{ldm['ema_decay']}, lr {ldm['lr']} | {ldm['steps']} x {ldm['batch']} | "
        f"{_minutes(t['teacher_ldm'])} |")
    add(f"| a. tiny decoder | output distillation (L1 after {d['downsample']}x pooling) + "
        f"hinge GAN x {d['gan_weight']} from step {d['gan_start']} | {d['steps']} x "
        f"{d['batch']} | {_minutes(t['a_decoder'])} |")
    add(f"| b. block removal | mid block, {b['drop_levels']} level and resnets to "
        f"{b['layers_per_block']} per level removed; task + output + feature distillation | "
        f"{b['steps']} x {b['batch']} | {_minutes(t['b_unet'])} |")
    add(f"| c. teacher ODE pairs | DPM-Solver++ {c['ode_steps']} steps, guidance "
        f"{c['ode_guidance']} | {c['pairs']} pairs | {_minutes(t['c_pairs'])} |")
    add(f"| c. one step | feature matching ({c['fm_steps']} steps), then segmented score "
        f"distillation below t = {int(c['alpha'] * 1000)} with an online fake score "
        f"({c['ssd_steps']} steps), real guidance {c['real_guidance']} | "
        f"{c['fm_steps'] + c['ssd_steps']} x {c['batch']} | {_minutes(t['c_one_step'])} |")
    add(f"| d. teacher ControlNet | denoising loss on Canny edges | {n['teacher_steps']} x "
        f"{n['teacher_batch']} | {_minutes(t['d_teacher_controlnet'])} |")
    add(f"| d. student ControlNet | controlled ODE pairs ({n['pairs']}), feature matching + "
        f"score distillation with the teacher's ControlNet in the real score | {n['steps']} x "
        f"{n['batch']} | {_minutes(t['d_pairs'] + t['d_student_controlnet'])} |")
    add(f"| evaluation | see below | | {_minutes(t['evaluation'])} |")
    paused = info.get("paused_seconds", {})
    note = "".join(f" The {k.replace('_', ' ')} time excludes {_minutes(v)} during which the "
                   f"run was stopped (SIGSTOP) while the engine's benchmarks had the machine."
                   for k, v in paused.items())
    add(f"\nWall time of the whole run, measured on the two-core build machine with "
        f"{info['threads']} PyTorch thread(s), lighter jobs sharing it at times: "
        f"**{_minutes(t['total'])}**.{note}\n")

    add("## Loss curves\n")
    add("`loss_curves.svg` plots every loss (moving average); `losses.csv` holds every step. "
        "Means over a tenth of each stage's steps, at the start, quarters and end:\n")
    add(_loss_table(losses_csv) + "\n")

    add("## Evaluation\n")
    add(f"{ev['prompts']} held-out prompts of the grammar (scenes of seed 1,000,003, which "
        "training never sees), one seed per prompt. Every pixel takes the nearest named "
        "colour; a named object counts as right when the largest region of its colour has the "
        "named shape (read from how much of its bounding box it fills). Adherence is the share "
        "of named objects right (`distill/eval_adherence.py`).\n")
    add("| images from | adherence | background | relation | whole prompt |\n|---|---|---|---|---|")
    for label, key in ((f"the generator's ground truth (the analysis' own ceiling)",
                        "ground_truth"),
                       (f"teacher, {teacher['steps']} steps, guidance {teacher['guidance']}",
                        "teacher"),
                       ("this model, 1 step, no guidance", "student")):
        e = ev[key]
        add(f"| {label} | {_pct(e['adherence'])} | {_pct(e['background'])} | "
            f"{_pct(e['relation'])} | {_pct(e['whole_prompt'])} |")
    add("")
    if meets:
        add(f"The one-step model reaches the target (at least 80%, within 10 points of the "
            f"teacher): {_pct(student['adherence'])} against {_pct(teacher['adherence'])}.\n")
    else:
        add(f"**The target is not met**: it asks for at least 80% and at most 10 points below "
            f"the teacher; this model has {_pct(student['adherence'])} against the teacher's "
            f"{_pct(teacher['adherence'])} ({gap:.1f} points apart). "
            + ("The teacher meets the target, so the one-step stages (c, and d for the "
               "ControlNet) fall short: at toy scale they ran a few hundred steps each, and they "
               "are the first thing to lengthen.\n" if teacher["adherence"] >= 0.80 else
               "The teacher itself falls short: its autoencoder and LDM training are the first "
               "things to lengthen.\n"))
    c_on, c_off = cn["controlnet"], cn["without_controlnet"]
    add(f"ControlNet (`distill/eval_controlnet.py`, {min(ev['prompts'], 100)} prompts, control "
        "image = Canny edges of the true scene): overlap of the generated image's Canny edges "
        "with the control edges, one pixel of tolerance.\n")
    add("| | edge precision | edge recall | edge F1 (overlap score) | adherence |\n"
        "|---|---|---|---|---|")
    add(f"| with the ControlNet | {c_on['edge_precision']:.3f} | {c_on['edge_recall']:.3f} | "
        f"{c_on['edge_f1']:.3f} | {_pct(c_on.get('adherence'))} |")
    add(f"| same prompts and seeds, without | {c_off['edge_precision']:.3f} | "
        f"{c_off['edge_recall']:.3f} | {c_off['edge_f1']:.3f} | |")
    add("\n`samples.png`: rows of 8 - ground truth (2 rows), teacher (2), this model (2), this "
        "model with the ControlNet (2), for the first 16 evaluation prompts.\n")

    add("## Speed in the C engine\n")
    if bench_text:
        add("`sdxs bench --model weights/" + name + " --batch 1` on the two-core build machine "
            "(CPU backend):\n")
        add("```\n" + bench_text.strip() + "\n```\n")
    else:
        add("Not measured yet (`sdxs bench --model weights/" + name + " --batch 1`).\n")

    add("## Reproducing\n")
    add("`distill/README.md` gives the install command. The run is deterministic from its seed "
        "for a given machine and thread count; on another CPU the numbers differ in the last "
        "digits and the pictures in details.\n")
    return "\n".join(out)


def write(dst, cn_dst, info, bench_text=None):
    """Writes dst/README.md (and a short pointer card in the ControlNet folder)."""
    name = os.path.basename(os.path.normpath(dst))
    if bench_text is None and os.path.exists(os.path.join(dst, BENCH_FILE)):
        with open(os.path.join(dst, BENCH_FILE)) as f:
            bench_text = f.read()
    with open(os.path.join(dst, "README.md"), "w") as f:
        f.write(render(info, os.path.join(dst, "losses.csv"), bench_text, name))
    if cn_dst:
        with open(os.path.join(cn_dst, "README.md"), "w") as f:
            f.write(f"# {os.path.basename(os.path.normpath(cn_dst))}\n\nThe edge ControlNet of "
                    f"`{name}` (one step, Canny edges of a 64x64 image as the control image). "
                    f"Training and evaluation are described in `../{name}/README.md`.\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="the shipped model folder (with run.json and losses.csv)")
    ap.add_argument("--bench", help="a file with the engine's benchmark table, copied beside "
                                    "the card")
    args = ap.parse_args(argv)
    with open(os.path.join(args.model, "run.json")) as f:
        info = json.load(f)
    bench_text = None
    if args.bench:
        with open(args.bench) as f:
            bench_text = f.read()
        with open(os.path.join(args.model, BENCH_FILE), "w") as f:
            f.write(bench_text)
    cn = os.path.normpath(args.model) + "-canny"
    write(args.model, cn if os.path.isdir(cn) else None, info, bench_text)


if __name__ == "__main__":
    sys.exit(main())
