/* scheduler.c: diffusers' noise schedules and the one step of each supported scheduler class,
 * reduced to the scalars of an sdxs_step_plan (see scheduler.h for the definitions).
 *
 * The noise schedule is rebuilt exactly as torch 1.13 builds it in float32 (torch.linspace's
 * kernel, cumprod accumulated in double), so alphas_cumprod matches diffusers bit for bit; the
 * per-step scalars follow diffusers' 0-dim float32 tensor arithmetic operation by operation.
 */
#include "engine/scheduler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/config.h"

/* ---- the noise schedule ---- */

/* torch.linspace(start, end, n, dtype=float32) on the CPU: the first half counts up from start,
 * the second half down from end (each value one fused multiply-add in torch's build), except
 * that whole 16-element chunks are filled 8 at a time as base + k * step from the chunk's first
 * value. Exact for n <= 32768 (one parallel chunk). */
static void torch_linspace(double start_d, double end_d, int n, float *out)
{
    const float start = (float)start_d, end = (float)end_d;
    const float step = (end - start) / (float)(n - 1);
    const int half = n / 2, vec_end = n / 16 * 16;

    for (int i0 = 0; i0 < vec_end; i0 += 8) {
        float base = i0 < half ? fmaf(step, (float)i0, start)
                               : fmaf(-step, (float)(n - i0 - 1), end);
        for (int k = 0; k < 8; k++)
            out[i0 + k] = base + (float)k * step;
    }
    for (int i = vec_end; i < n; i++)
        out[i] = i < half ? fmaf(step, (float)i, start) : fmaf(-step, (float)(n - i - 1), end);
}

/* diffusers' betas_for_alpha_bar with the cosine transform ("squaredcos_cap_v2"), in double as
 * Python computes it, then rounded to float32 by torch.tensor. */
static double alpha_bar_cosine(double t)
{
    double c = cos((t + 0.008) / 1.008 * 3.14159265358979323846 / 2);
    return c * c;
}

static void betas_cosine(int n, float *betas)
{
    for (int i = 0; i < n; i++) {
        double t1 = (double)i / n, t2 = (double)(i + 1) / n;
        double beta = 1 - alpha_bar_cosine(t2) / alpha_bar_cosine(t1);
        betas[i] = (float)(beta < 0.999 ? beta : 0.999);
    }
}

/* torch.cumprod of float32 on the CPU accumulates in double and rounds each output. */
static void cumprod_alphas(const float *betas, int n, float *alphas_cumprod)
{
    double acc = 1.0;
    for (int i = 0; i < n; i++) {
        acc *= (double)(1.0f - betas[i]);
        alphas_cumprod[i] = (float)acc;
    }
}

/* diffusers' rescale_zero_terminal_snr: shift and scale sqrt(alphas_cumprod) so the last one is
 * zero and the first unchanged, then turn it back into betas (float32 throughout). tmp holds n. */
static void rescale_zero_snr(float *betas, int n, float *tmp)
{
    float first, last, scale;
    cumprod_alphas(betas, n, tmp);
    for (int i = 0; i < n; i++)
        tmp[i] = sqrtf(tmp[i]);
    first = tmp[0];
    last = tmp[n - 1];
    scale = first / (first - last);
    for (int i = 0; i < n; i++) {
        tmp[i] -= last;
        tmp[i] *= scale;
        tmp[i] = tmp[i] * tmp[i]; /* alphas_bar */
    }
    betas[0] = 1.0f - tmp[0];
    for (int i = 1; i < n; i++)
        betas[i] = 1.0f - tmp[i] / tmp[i - 1];
}

/* ---- reading the configuration ---- */

typedef struct class_info {
    const char *name;
    sdxs_sched_kind kind;
    /* diffusers 0.27.2's constructor defaults where classes differ */
    double beta_start, beta_end;
    const char *beta_schedule, *spacing;
    bool has_zero_snr; /* the class takes rescale_betas_zero_snr */
} class_info;

static const class_info CLASSES[] = {
    {"EulerDiscreteScheduler", SDXS_SCHED_EULER, 0.0001, 0.02, "linear", "linspace", true},
    {"EulerAncestralDiscreteScheduler", SDXS_SCHED_EULER_ANCESTRAL, 0.0001, 0.02, "linear",
     "linspace", true},
    {"DEISMultistepScheduler", SDXS_SCHED_DEIS, 0.0001, 0.02, "linear", "linspace", false},
    {"DDIMScheduler", SDXS_SCHED_DDIM, 0.0001, 0.02, "linear", "leading", true},
    {"LCMScheduler", SDXS_SCHED_LCM, 0.00085, 0.012, "scaled_linear", "leading", true},
};

/* Index of name in the NULL-terminated list, or -1 after rejecting the key. */
static int pick(sdxs_cfg *c, const char *key, const char *value, const char *const *names)
{
    char list[256] = "";
    size_t used = 0;
    for (int i = 0; names[i]; i++) {
        if (!strcmp(value, names[i]))
            return i;
        used += (size_t)snprintf(list + used, used < sizeof(list) ? sizeof(list) - used : 0,
                                 "%s%s", i ? ", " : "", names[i]);
    }
    sdxs_cfg_reject(c, key, "'%s' is not supported (supported: %s)", value, list);
    return -1;
}

/* trained_betas: a list of exactly T numbers, rounded to float32 as torch.tensor does. */
static void read_trained_betas(sdxs_cfg *c, int n, float *betas)
{
    json_t *v = json_object_get(c->root, "trained_betas");
    if (c->status != SDXS_OK)
        return;
    if (!json_is_array(v) || (int)json_array_size(v) != n) {
        sdxs_cfg_reject(c, "trained_betas", "expected a list of num_train_timesteps (%d) numbers",
                        n);
        return;
    }
    for (int i = 0; i < n; i++) {
        json_t *e = json_array_get(v, (size_t)i);
        if (!json_is_number(e) || !isfinite(json_number_value(e))) {
            sdxs_cfg_reject(c, "trained_betas", "entry %d is not a finite number", i);
            return;
        }
        betas[i] = (float)json_number_value(e);
    }
}

/* The betas, alphas_cumprod and the checks on them. */
static void read_schedule(sdxs_cfg *c, const class_info *ci, sdxs_scheduler *s, float *betas,
                          float *tmp)
{
    static const char *const schedules[] = {"linear", "scaled_linear", "squaredcos_cap_v2", NULL};
    const int n = s->num_train_timesteps;
    double start = sdxs_cfg_num(c, "beta_start", ci->beta_start);
    double end = sdxs_cfg_num(c, "beta_end", ci->beta_end);
    const char *schedule = sdxs_cfg_str(c, "beta_schedule", ci->beta_schedule);
    bool zero_snr = ci->has_zero_snr && sdxs_cfg_bool(c, "rescale_betas_zero_snr", false);

    /* Step 1: the betas (trained_betas wins over beta_schedule, as in diffusers). */
    if (sdxs_cfg_has(c, "trained_betas")) {
        read_trained_betas(c, n, betas);
    } else {
        int which = pick(c, "beta_schedule", schedule, schedules);
        if (!isfinite(start) || !isfinite(end) || start < 0 || end < 0)
            sdxs_cfg_reject(c, "beta_start", "beta_start %g and beta_end %g must be finite and "
                            "not negative", start, end);
        if (c->status != SDXS_OK)
            return;
        if (which == 0) {
            torch_linspace(start, end, n, betas);
        } else if (which == 1) {
            torch_linspace(pow(start, 0.5), pow(end, 0.5), n, betas);
            for (int i = 0; i < n; i++)
                betas[i] = betas[i] * betas[i];
        } else {
            betas_cosine(n, betas);
        }
    }
    if (c->status != SDXS_OK)
        return;
    for (int i = 0; i < n; i++) {
        if (!(betas[i] >= 0.0f && betas[i] <= 1.0f)) {
            sdxs_cfg_reject(c, sdxs_cfg_has(c, "trained_betas") ? "trained_betas" : "beta_end",
                            "beta %d is %g, outside [0, 1]", i, (double)betas[i]);
            return;
        }
    }

    /* Step 2: optional zero terminal SNR, then the cumulative product. */
    if (zero_snr)
        rescale_zero_snr(betas, n, tmp);
    cumprod_alphas(betas, n, s->alphas_cumprod);
    /* EulerDiscrete keeps the last sigma finite. */
    if (zero_snr && s->kind == SDXS_SCHED_EULER)
        s->alphas_cumprod[n - 1] = 0x1p-24f;
}

/* Keys the class has that change a one-step result: read them, reject what is unsupported. */
static void read_class_keys(sdxs_cfg *c, sdxs_scheduler *s)
{
    static const char *const euler_interp[] = {"linear", NULL};
    static const char *const timestep_types[] = {"discrete", "continuous", NULL};
    static const char *const deis_algorithms[] = {"deis", "dpmsolver", "dpmsolver++", NULL};
    static const char *const deis_solvers[] = {"logrho", "midpoint", "heun", "bh1", "bh2", NULL};

    switch (s->kind) {
    case SDXS_SCHED_EULER:
        pick(c, "interpolation_type", sdxs_cfg_str(c, "interpolation_type", "linear"),
             euler_interp);
        s->continuous_timestep =
            pick(c, "timestep_type", sdxs_cfg_str(c, "timestep_type", "discrete"),
                 timestep_types) == 1 &&
            s->prediction == SDXS_PREDICT_V;
        if (sdxs_cfg_bool(c, "use_karras_sigmas", false))
            sdxs_cfg_reject(c, "use_karras_sigmas", "Karras sigmas are not supported");
        break;
    case SDXS_SCHED_EULER_ANCESTRAL:
        if (s->prediction == SDXS_PREDICT_SAMPLE)
            sdxs_cfg_reject(c, "prediction_type", "'sample' is not implemented by this class");
        break;
    case SDXS_SCHED_DEIS:
        /* diffusers maps the dpmsolver names and the other solver types to deis / logrho.
         * solver_order and lower_order_final do not matter: one step is always first order. */
        pick(c, "algorithm_type", sdxs_cfg_str(c, "algorithm_type", "deis"), deis_algorithms);
        pick(c, "solver_type", sdxs_cfg_str(c, "solver_type", "logrho"), deis_solvers);
        if (sdxs_cfg_bool(c, "use_karras_sigmas", false))
            sdxs_cfg_reject(c, "use_karras_sigmas", "Karras sigmas are not supported");
        break;
    case SDXS_SCHED_DDIM:
    case SDXS_SCHED_LCM:
        s->clip_sample = sdxs_cfg_bool(c, "clip_sample", s->kind == SDXS_SCHED_DDIM);
        s->clip_sample_range = (float)sdxs_cfg_num(c, "clip_sample_range", 1.0);
        if (s->clip_sample && !(s->clip_sample_range > 0.0f && isfinite(s->clip_sample_range)))
            sdxs_cfg_reject(c, "clip_sample_range", "must be a positive number");
        s->set_alpha_to_one = sdxs_cfg_bool(c, "set_alpha_to_one", true);
        if (s->kind == SDXS_SCHED_LCM) {
            s->original_inference_steps = sdxs_cfg_int(c, "original_inference_steps", 50, 1,
                                                       s->num_train_timesteps);
            s->timestep_scaling = (float)sdxs_cfg_num(c, "timestep_scaling", 10.0);
            if (!isfinite(s->timestep_scaling))
                sdxs_cfg_reject(c, "timestep_scaling", "must be a finite number");
        }
        break;
    }
    if (s->kind != SDXS_SCHED_EULER && s->kind != SDXS_SCHED_EULER_ANCESTRAL &&
        sdxs_cfg_bool(c, "thresholding", false))
        sdxs_cfg_reject(c, "thresholding", "dynamic thresholding is not supported");
}

/* t1: the single timestep of set_timesteps(1), per class and spacing. */
static int text_timestep(const sdxs_scheduler *s)
{
    const int n = s->num_train_timesteps;
    if (s->kind == SDXS_SCHED_LCM)
        return n / s->original_inference_steps * s->original_inference_steps - 1;
    switch (s->spacing) {
    case SDXS_SPACING_TRAILING:
        return n - 1;
    case SDXS_SPACING_LINSPACE:
        return s->kind == SDXS_SCHED_DEIS ? n - 1 : 0;
    case SDXS_SPACING_LEADING:
        return (s->kind == SDXS_SCHED_DEIS ? n / 2 : 0) + s->steps_offset;
    }
    return 0;
}

sdxs_status sdxs_scheduler_load(const char *config_path, sdxs_scheduler *out, sdxs_error *err)
{
    static const char *const predictions[] = {"epsilon", "v_prediction", "sample",
                                              "original_sample", NULL};
    static const char *const spacings[] = {"linspace", "leading", "trailing", NULL};
    const class_info *ci = NULL;
    sdxs_scheduler *s = out;
    float *betas = NULL, *tmp = NULL;
    const char *name;
    sdxs_cfg c;
    sdxs_status st;
    int which;

    memset(s, 0, sizeof(*s));
    st = sdxs_cfg_open(&c, config_path, err);
    if (st != SDXS_OK)
        return st;

    /* Step 1: the class. */
    snprintf(s->path, sizeof(s->path), "%s", config_path);
    if (!sdxs_cfg_has(&c, "_class_name"))
        sdxs_cfg_reject(&c, "_class_name", "missing: the scheduler class is not known");
    name = sdxs_cfg_str(&c, "_class_name", "");
    for (size_t i = 0; i < SDXS_ARRAY_LEN(CLASSES); i++)
        if (!strcmp(name, CLASSES[i].name))
            ci = &CLASSES[i];
    if (!ci) {
        if (c.status == SDXS_OK)
            sdxs_cfg_reject(&c, "_class_name", "'%s' is not a supported scheduler (supported: "
                            "EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, "
                            "DEISMultistepScheduler, DDIMScheduler, LCMScheduler)", name);
        return sdxs_cfg_close(&c);
    }
    s->kind = ci->kind;
    snprintf(s->class_name, sizeof(s->class_name), "%s", ci->name);

    /* Step 2: keys every class has. */
    s->num_train_timesteps =
        sdxs_cfg_int(&c, "num_train_timesteps", 1000, 2, SDXS_SCHED_MAX_TRAIN_STEPS);
    which = pick(&c, "prediction_type", sdxs_cfg_str(&c, "prediction_type", "epsilon"),
                 predictions);
    s->prediction = which == 1 ? SDXS_PREDICT_V : which >= 2 ? SDXS_PREDICT_SAMPLE
                                                             : SDXS_PREDICT_EPSILON;
    if (which == 3 && s->kind != SDXS_SCHED_EULER)
        sdxs_cfg_reject(&c, "prediction_type", "'original_sample' is only an EulerDiscrete name");
    which = pick(&c, "timestep_spacing", sdxs_cfg_str(&c, "timestep_spacing", ci->spacing),
                 spacings);
    s->spacing = which == 1 ? SDXS_SPACING_LEADING
                            : which == 2 ? SDXS_SPACING_TRAILING : SDXS_SPACING_LINSPACE;
    s->steps_offset = sdxs_cfg_int(&c, "steps_offset", 0, 0, SDXS_SCHED_MAX_TRAIN_STEPS);

    /* Step 3: the class's own keys, then the schedule. */
    read_class_keys(&c, s);
    if (c.status == SDXS_OK) {
        betas = sdxs_alloc((size_t)s->num_train_timesteps * sizeof(float), err, "betas");
        tmp = sdxs_alloc((size_t)s->num_train_timesteps * sizeof(float), err, "betas");
        if (!betas || !tmp)
            c.status = SDXS_ERR_RUNTIME;
        else
            read_schedule(&c, ci, s, betas, tmp);
    }
    free(betas);
    free(tmp);

    /* Step 4: the text-to-image timestep must lie on the training schedule. */
    s->text_timestep = text_timestep(s);
    if (c.status == SDXS_OK &&
        (s->text_timestep < 0 || s->text_timestep >= s->num_train_timesteps))
        sdxs_cfg_reject(&c, "steps_offset", "the one-step timestep %d is outside [0, %d]",
                        s->text_timestep, s->num_train_timesteps - 1);
    st = sdxs_cfg_close(&c);
    if (st == SDXS_OK) {
        sdxs_step_plan plan;
        st = sdxs_scheduler_plan(s, 1.0, &plan, err);
    }
    return st;
}

/* ---- one step ---- */

/* sqrt((1 - alphas_cumprod) / alphas_cumprod) at step i, as Euler and DEIS tabulate it. */
static float sigma_at(const sdxs_scheduler *s, int i)
{
    float a = s->alphas_cumprod[i];
    return sqrtf((1.0f - a) / a);
}

/* The result as a linear function of the latent and the model output, x0 optionally clamped. */
typedef struct linear_step {
    double out_x, out_eps;
    double x0_x, x0_eps, out_x0; /* the clamped part, used when clip > 0 */
    float clip;
} linear_step;

static void plan_euler(const sdxs_scheduler *s, int t, sdxs_step_plan *p, linear_step *ls)
{
    const float sigma = sigma_at(s, t);
    const float sq_plus_one = sigma * sigma + 1.0f;

    p->timestep = s->continuous_timestep ? 0.25f * logf(sigma) : (float)t;
    p->in_div = sqrtf(sq_plus_one);
    /* max(sigmas) of the schedule [sigma, 0]; leading spacing adds the unit variance. */
    p->init_sigma = s->spacing == SDXS_SPACING_LEADING ? sqrtf(sigma * sigma + 1.0f) : sigma;
    p->add_x = 1.0f;
    p->add_noise = sigma;

    /* Euler to sigma 0 (the ancestral noise is zero there): the result is the predicted x0. */
    switch (s->prediction) {
    case SDXS_PREDICT_EPSILON: /* x0 = latent - sigma * eps */
        ls->out_x = 1.0;
        ls->out_eps = -(double)sigma;
        break;
    case SDXS_PREDICT_V: /* x0 = eps * (-sigma / sqrt(sigma^2 + 1)) + latent / (sigma^2 + 1) */
        ls->out_x = 1.0 / (double)sq_plus_one;
        ls->out_eps = (double)(-sigma / sqrtf(sq_plus_one));
        break;
    case SDXS_PREDICT_SAMPLE:
        ls->out_x = 0.0;
        ls->out_eps = 1.0;
        break;
    }
}

/* DEIS's first-order step from sigma(t) to sigma(0) (its last sigma), in the alpha/sigma form. */
static void plan_deis(const sdxs_scheduler *s, int t, sdxs_step_plan *p, linear_step *ls)
{
    const float sig_from = sigma_at(s, t), sig_to = sigma_at(s, 0);
    const float alpha_s = 1.0f / sqrtf(sig_from * sig_from + 1.0f), sigma_s = sig_from * alpha_s;
    const float alpha_t = 1.0f / sqrtf(sig_to * sig_to + 1.0f), sigma_t = sig_to * alpha_t;
    const float lambda_s = logf(alpha_s) - logf(sigma_s);
    const float lambda_t = logf(alpha_t) - logf(sigma_t);
    const float h = lambda_t - lambda_s;
    const float ratio = alpha_t / alpha_s;
    const float k = sigma_t * (expf(h) - 1.0f);
    double conv_x, conv_eps; /* the model output converted to epsilon: conv_x * x + conv_eps * m */

    p->timestep = (float)t;
    p->in_div = 1.0f;
    p->init_sigma = 1.0f;
    p->add_x = alpha_s;
    p->add_noise = sigma_s;

    switch (s->prediction) {
    case SDXS_PREDICT_EPSILON:
        conv_x = 0.0;
        conv_eps = 1.0;
        break;
    case SDXS_PREDICT_V: /* x0 = alpha x - sigma v; eps = (x - alpha x0) / sigma */
        conv_x = (1.0 - (double)alpha_s * alpha_s) / sigma_s;
        conv_eps = alpha_s;
        break;
    default: /* x0 = m */
        conv_x = 1.0 / sigma_s;
        conv_eps = -(double)alpha_s / sigma_s;
        break;
    }
    /* x_t = (alpha_t / alpha_s) x - sigma_t (e^h - 1) eps */
    ls->out_x = (double)ratio - (double)k * conv_x;
    ls->out_eps = -(double)k * conv_eps;
}

/* x0 and epsilon as DDIM and LCM predict them from the latent and the model output. */
static void predict_x0(const sdxs_scheduler *s, float sqrt_a, float sqrt_b, double x0[2],
                       double e[2])
{
    switch (s->prediction) {
    case SDXS_PREDICT_EPSILON: /* x0 = (x - sqrt(b) m) / sqrt(a) */
        x0[0] = 1.0 / sqrt_a;
        x0[1] = -(double)sqrt_b / sqrt_a;
        e[0] = 0.0;
        e[1] = 1.0;
        break;
    case SDXS_PREDICT_SAMPLE: /* eps = (x - sqrt(a) m) / sqrt(b) */
        x0[0] = 0.0;
        x0[1] = 1.0;
        e[0] = 1.0 / sqrt_b;
        e[1] = -(double)sqrt_a / sqrt_b;
        break;
    case SDXS_PREDICT_V: /* x0 = sqrt(a) x - sqrt(b) v, eps = sqrt(a) v + sqrt(b) x */
        x0[0] = sqrt_a;
        x0[1] = -(double)sqrt_b;
        e[0] = sqrt_b;
        e[1] = sqrt_a;
        break;
    }
}

/* DDIM with eta 0 to the final alpha (1, or alphas_cumprod[0] without set_alpha_to_one). */
static void plan_ddim(const sdxs_scheduler *s, int t, sdxs_step_plan *p, linear_step *ls)
{
    const float a = s->alphas_cumprod[t];
    const float sqrt_a = sqrtf(a), sqrt_b = sqrtf(1.0f - a);
    const float a_prev = s->set_alpha_to_one ? 1.0f : s->alphas_cumprod[0];
    const float to_x0 = sqrtf(a_prev), to_eps = sqrtf(1.0f - a_prev - 0.0f);
    double x0[2], e[2];

    p->timestep = (float)t;
    p->in_div = 1.0f;
    p->init_sigma = 1.0f;
    p->add_x = sqrt_a;
    p->add_noise = sqrt_b;
    predict_x0(s, sqrt_a, sqrt_b, x0, e);
    ls->x0_x = x0[0];
    ls->x0_eps = x0[1];
    ls->out_x0 = to_x0;
    ls->out_x = to_eps * e[0];
    ls->out_eps = to_eps * e[1];
    ls->clip = s->clip_sample ? s->clip_sample_range : 0.0f;
}

/* LCM's last step: the boundary-condition mix c_out * x0 + c_skip * x. */
static void plan_lcm(const sdxs_scheduler *s, int t, sdxs_step_plan *p, linear_step *ls)
{
    const float a = s->alphas_cumprod[t];
    const float sqrt_a = sqrtf(a), sqrt_b = sqrtf(1.0f - a);
    const float scaled = (float)t * s->timestep_scaling;
    const float denom = scaled * scaled + 0.25f; /* sigma_data = 0.5 */
    const float c_skip = (1.0f / denom) * 0.25f, c_out = scaled / sqrtf(denom);
    double x0[2], e[2];

    p->timestep = (float)t;
    p->in_div = 1.0f;
    p->init_sigma = 1.0f;
    p->add_x = sqrt_a;
    p->add_noise = sqrt_b;
    predict_x0(s, sqrt_a, sqrt_b, x0, e);
    ls->x0_x = x0[0];
    ls->x0_eps = x0[1];
    ls->out_x0 = c_out;
    ls->out_x = c_skip;
    ls->out_eps = 0.0;
    ls->clip = s->clip_sample ? s->clip_sample_range : 0.0f;
}

static void plan_skip(sdxs_step_plan *p)
{
    memset(p, 0, sizeof(*p));
    p->skip_unet = true;
    p->train_step = -1;
    p->init_sigma = 1.0f;
    p->add_x = 1.0f;
    p->in_div = 1.0f;
    p->out_x = 1.0f;
}

static bool plan_finite(const sdxs_step_plan *p)
{
    const float v[] = {p->timestep, p->init_sigma, p->add_x, p->add_noise, p->in_div,
                       p->out_x,    p->out_eps,    p->x0_x,  p->x0_eps,    p->out_x0};
    for (size_t i = 0; i < SDXS_ARRAY_LEN(v); i++)
        if (!isfinite(v[i]))
            return false;
    return p->in_div != 0.0f;
}

sdxs_status sdxs_scheduler_plan(const sdxs_scheduler *s, double strength, sdxs_step_plan *out,
                                sdxs_error *err)
{
    linear_step ls = {0};
    int t;

    /* Step 1: the timestep t(s) (see scheduler.h). */
    if (!(strength >= 0.0 && strength <= 1.0))
        return sdxs_fail(err, SDXS_ERR_INVALID, "strength", "strength %g is outside [0, 1]",
                         strength);
    t = (int)floor(strength * (s->text_timestep + 1) + 0.5) - 1;
    if (strength == 0.0 || t < 0) {
        plan_skip(out);
        return SDXS_OK;
    }
    SDXS_ASSERT(t <= s->text_timestep && t < s->num_train_timesteps);

    /* Step 2: the class's scalars. */
    memset(out, 0, sizeof(*out));
    out->train_step = t;
    switch (s->kind) {
    case SDXS_SCHED_EULER:
    case SDXS_SCHED_EULER_ANCESTRAL:
        plan_euler(s, t, out, &ls);
        break;
    case SDXS_SCHED_DEIS:
        plan_deis(s, t, out, &ls);
        break;
    case SDXS_SCHED_DDIM:
        plan_ddim(s, t, out, &ls);
        break;
    case SDXS_SCHED_LCM:
        plan_lcm(s, t, out, &ls);
        break;
    }

    /* Step 3: without a clamp the x0 part folds into the linear coefficients. */
    if (ls.clip > 0.0f) {
        out->clip = ls.clip;
        out->x0_x = (float)ls.x0_x;
        out->x0_eps = (float)ls.x0_eps;
        out->out_x0 = (float)ls.out_x0;
    } else {
        ls.out_x += ls.out_x0 * ls.x0_x;
        ls.out_eps += ls.out_x0 * ls.x0_eps;
    }
    out->out_x = (float)ls.out_x;
    out->out_eps = (float)ls.out_eps;
    if (!plan_finite(out))
        return sdxs_fail(err, SDXS_ERR_MODEL, s->path,
                         "%s: %s: the step from timestep %d has a non-finite or zero "
                         "coefficient (alphas_cumprod[%d] = %g; check the keys "
                         "rescale_betas_zero_snr, prediction_type, trained_betas)",
                         s->path, s->class_name, t, t, (double)s->alphas_cumprod[t]);
    return SDXS_OK;
}

/* ---- host references of the elementwise stages ---- */

void sdxs_scheduler_start(const sdxs_step_plan *p, size_t n, const float *noise,
                          const float *clean, float *out)
{
    if (!clean) {
        for (size_t i = 0; i < n; i++)
            out[i] = noise[i] * p->init_sigma;
        return;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = p->add_x * clean[i] + p->add_noise * noise[i];
}

void sdxs_scheduler_model_input(const sdxs_step_plan *p, size_t n, const float *latent,
                                float *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = latent[i] / p->in_div;
}

void sdxs_scheduler_finish(const sdxs_step_plan *p, size_t n, const float *latent,
                           const float *eps, float *out)
{
    if (p->skip_unet) {
        if (out != latent)
            memmove(out, latent, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float r = p->out_x * latent[i] + p->out_eps * eps[i];
        if (p->clip > 0.0f) {
            float x0 = p->x0_x * latent[i] + p->x0_eps * eps[i];
            x0 = x0 < -p->clip ? -p->clip : x0 > p->clip ? p->clip : x0;
            r += p->out_x0 * x0;
        }
        out[i] = r;
    }
}
