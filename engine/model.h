/* model.h: what an opened model folder holds: its components, the backend and execution context
 * they run on, and the lock that serialises requests. Internal to the engine (model.c opens and
 * describes, pipeline.c generates). */
#ifndef SDXS_MODEL_H
#define SDXS_MODEL_H

#include <pthread.h>

#include "engine/clip.h"
#include "engine/controlnet.h"
#include "engine/scheduler.h"
#include "engine/taesd.h"
#include "engine/tokenizer.h"
#include "engine/unet.h"

#define SDXS_DESCRIBE_BYTES 8192

struct sdxs_model {
    char dir[1024];
    sdxs_model_options opt;
    pthread_mutex_t lock; /* one request at a time on the execution context */

    sdxs_backend *be;
    sdxs_exec *exec;
    sdxs_weight_store *ws;

    sdxs_tokenizer *tok;
    sdxs_clip clip;
    sdxs_unet *unet; /* large: on the heap */
    sdxs_controlnet *controlnet; /* NULL unless opened with a ControlNet folder */
    char controlnet_dir[1024];
    sdxs_taesd taesd;
    sdxs_scheduler sched;
    char scheduler_class[64];

    uint64_t params_text, params_unet, params_encoder, params_decoder, params_controlnet;
    int image_multiple; /* allowed image sides are multiples of this */
    char describe[SDXS_DESCRIBE_BYTES];
};

#endif /* SDXS_MODEL_H */
