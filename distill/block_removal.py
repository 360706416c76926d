"""U-Net compression by block removal (stage b): derive a student configuration from the teacher's
by dropping the mid block, the lowest-resolution levels and resnets per level; map the teacher's
weights onto every student module that has a counterpart; pair student and teacher features for
feature-level distillation. The same mapping initialises a ControlNet for the student from the
teacher's ControlNet (stage d).

Skip connections decide which resnets correspond. In a diffusers U-Net the up block of level l has
layers+1 resnets: resnet j < layers reads the output of down resnet (layers-1-j) of level l, and the
last one reads the previous level's downsampler (or conv_in). The student keeps the first down
resnets (and their attentions) of each level, and in each up block the first resnets plus the last
one, so that every kept resnet still reads a skip of the same width as in the teacher.
"""
import copy

import torch

PER_LEVEL_KEYS = ("attention_head_dim", "num_attention_heads", "only_cross_attention",
                  "transformer_layers_per_block", "cross_attention_dim", "layers_per_block")


def derive_student_config(teacher_cfg, drop_mid=True, drop_levels=1, layers_per_block=1):
    """The student configuration (a dict for UNet2DConditionModel.from_config, or for
    ControlNetModel.from_config when given a ControlNet's configuration with drop_mid=False)."""
    cfg = copy.deepcopy(dict(teacher_cfg))
    n_t = len(cfg["down_block_types"])
    n_s = n_t - drop_levels
    if n_s < 1:
        raise ValueError(f"drop_levels={drop_levels} leaves no level of {n_t}")
    t_layers = cfg["layers_per_block"]
    if not isinstance(t_layers, int):
        raise ValueError("block removal needs an integer layers_per_block in the teacher")
    if not 1 <= layers_per_block <= t_layers:
        raise ValueError(f"layers_per_block={layers_per_block} must be in 1..{t_layers}")
    cfg["down_block_types"] = list(cfg["down_block_types"][:n_s])
    if "up_block_types" in cfg:  # a ControlNet configuration has no up path
        cfg["up_block_types"] = list(cfg["up_block_types"][drop_levels:])
    cfg["block_out_channels"] = list(cfg["block_out_channels"][:n_s])
    for key in PER_LEVEL_KEYS:
        if isinstance(cfg.get(key), (list, tuple)):
            cfg[key] = list(cfg[key][:n_s])
    cfg["layers_per_block"] = layers_per_block
    if drop_mid:
        cfg["mid_block_type"] = None
    for key in [k for k in cfg if k.startswith("_")]:
        del cfg[key]
    return cfg


def _levels(cfg):
    return len(cfg["down_block_types"]), cfg["layers_per_block"]


def unet_module_map(teacher_cfg, student_cfg):
    """{student module prefix: teacher module prefix} for every student module that has a
    teacher counterpart (prefixes as in state_dict keys, ending with '.')."""
    n_t, l_t = _levels(teacher_cfg)
    n_s, l_s = _levels(student_cfg)
    drop = n_t - n_s
    m = {p: p for p in ("conv_in.", "time_embedding.", "conv_norm_out.", "conv_out.")}
    for i in range(n_s):
        for j in range(l_s):
            m[f"down_blocks.{i}.resnets.{j}."] = f"down_blocks.{i}.resnets.{j}."
            m[f"down_blocks.{i}.attentions.{j}."] = f"down_blocks.{i}.attentions.{j}."
        if i < n_s - 1:
            m[f"down_blocks.{i}.downsamplers."] = f"down_blocks.{i}.downsamplers."
    for k in range(n_s):
        tk = k + drop
        for j in range(l_s + 1):
            tj = j if j < l_s else l_t  # the last resnet reads the previous level's skip
            m[f"up_blocks.{k}.resnets.{j}."] = f"up_blocks.{tk}.resnets.{tj}."
            m[f"up_blocks.{k}.attentions.{j}."] = f"up_blocks.{tk}.attentions.{tj}."
        if k < n_s - 1:
            m[f"up_blocks.{k}.upsamplers."] = f"up_blocks.{tk}.upsamplers."
    if student_cfg.get("mid_block_type") and teacher_cfg.get("mid_block_type"):
        m["mid_block."] = "mid_block."
    return m


def _skips(cfg):
    """The down path's skip samples in order: ('in',), ('res', level, j), ('down', level)."""
    n, layers = _levels(cfg)
    out = [("in",)]
    for i in range(n):
        out += [("res", i, j) for j in range(layers)]
        if i < n - 1:
            out.append(("down", i))
    return out


def controlnet_module_map(teacher_cfg, student_cfg):
    """{student prefix: teacher prefix} for a ControlNet built on the student U-Net, initialised
    from the teacher's ControlNet: the down path as in unet_module_map, the zero convolutions by
    the skip they belong to, the conditioning embedding and the mid block unchanged."""
    n_s, l_s = _levels(student_cfg)
    m = {p: p for p in ("conv_in.", "time_embedding.", "controlnet_cond_embedding.",
                        "mid_block.", "controlnet_mid_block.")}
    for i in range(n_s):
        for j in range(l_s):
            m[f"down_blocks.{i}.resnets.{j}."] = f"down_blocks.{i}.resnets.{j}."
            m[f"down_blocks.{i}.attentions.{j}."] = f"down_blocks.{i}.attentions.{j}."
        if i < n_s - 1:
            m[f"down_blocks.{i}.downsamplers."] = f"down_blocks.{i}.downsamplers."
    t_index = {s: k for k, s in enumerate(_skips(teacher_cfg))}
    for k, s in enumerate(_skips(student_cfg)):
        m[f"controlnet_down_blocks.{k}."] = f"controlnet_down_blocks.{t_index[s]}."
    return m


def map_weights(student, teacher, module_map):
    """Copies teacher weights into the student wherever the module map names a counterpart of the
    same shape. Returns (copied, kept): the student keys that took teacher weights, and those
    that kept their own initialisation (no counterpart, or a different shape)."""
    t_sd = teacher.state_dict()
    s_sd = student.state_dict()
    prefixes = sorted(module_map, key=len, reverse=True)
    copied, kept = [], []
    new = {}
    for key, value in s_sd.items():
        src = None
        for p in prefixes:
            if key.startswith(p):
                src = module_map[p] + key[len(p):]
                break
        if src is not None and src in t_sd and t_sd[src].shape == value.shape:
            new[key] = t_sd[src].detach().clone().to(value.dtype)
            copied.append(key)
        else:
            kept.append(key)
    student.load_state_dict(new, strict=False)
    return copied, kept


def feature_pairs(teacher_cfg, student_cfg):
    """(student module, teacher module) names whose outputs have the same shape and meaning:
    the down blocks that keep their downsampler, and every up block."""
    n_t, _ = _levels(teacher_cfg)
    n_s, _ = _levels(student_cfg)
    drop = n_t - n_s
    pairs = [(f"down_blocks.{i}", f"down_blocks.{i}") for i in range(n_s - 1)]
    pairs += [(f"up_blocks.{k}", f"up_blocks.{k + drop}") for k in range(n_s)]
    return pairs


class FeatureTap:
    """Records the outputs of named submodules on every forward pass (for a down block, its
    hidden-state output, not the skip tuple)."""

    def __init__(self, model, names):
        self.names = list(names)
        self.out = {}
        mods = dict(model.named_modules())
        self.handles = [mods[n].register_forward_hook(self._hook(n)) for n in self.names]

    def _hook(self, name):
        def f(_module, _inp, output):
            self.out[name] = output[0] if isinstance(output, tuple) else output
        return f

    def take(self):
        feats = [self.out[n] for n in self.names]
        self.out = {}
        return feats

    def remove(self):
        for h in self.handles:
            h.remove()


def build_student(teacher_unet, **kw):
    """A student UNet2DConditionModel derived from teacher_unet and initialised from it.
    Returns (student, copied keys, kept keys)."""
    from diffusers import UNet2DConditionModel
    cfg = derive_student_config(teacher_unet.config, **kw)
    student = UNet2DConditionModel.from_config(cfg)
    student.to(next(teacher_unet.parameters()).dtype)
    with torch.no_grad():
        copied, kept = map_weights(student, teacher_unet,
                                   unet_module_map(teacher_unet.config, cfg))
    return student, copied, kept
