// libmtmd (images and audio) behind the same guard as guarded_calls.cpp: decoding a file,
// preprocessing an image and encoding it go through GGML_ASSERTs and allocations sized by
// the input, so a bad image or mmproj file must become an error, not the end of the process.
// pyllama_image_size reads an image's dimensions from its header with the stb_image that
// libmtmd decodes with, so Python can refuse an image too large to decode before a byte of
// its pixels is allocated.

#include <cstdint>
#include <cstring>

#include "guard.h"

#include "mtmd-helper.h"
#include "mtmd.h"

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
#if defined(__GNUC__)
#    pragma GCC diagnostic push
#    pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include "stb/stb_image.h"
#if defined(__GNUC__)
#    pragma GCC diagnostic pop
#endif

extern "C" {

// false when stb_image cannot read the header; pyllama_last_failure() then says why: "too large"
// for an image stb_image refuses to decode (over 2^30 bytes of pixels). stbi_info_from_memory
// would say "unknown image type" then (it tries every format in turn); this asks each itself.
bool pyllama_image_size(const unsigned char * buf, size_t len, int * width, int * height) {
    if (len > INT32_MAX) {
        return false;
    }
    using info_of = int (*)(stbi__context *, int *, int *, int *);
    return guarded(false, [&] {
        int channels = 0;
        for (info_of info : {stbi__jpeg_info, stbi__png_info, stbi__gif_info, stbi__bmp_info, stbi__psd_info,
                             stbi__pic_info, stbi__pnm_info, stbi__hdr_info, stbi__tga_info}) {
            stbi__context context;
            stbi__start_mem(&context, buf, (int) len);
            if (info(&context, width, height, &channels)) {
                return true;
            }
            const char * reason = stbi_failure_reason();
            if (reason != nullptr && std::strcmp(reason, "too large") == 0) {
                pyllama_guard::fail(reason);
                return false;
            }
        }
        pyllama_guard::fail("unknown image type");
        return false;
    });
}

mtmd_context * pyllama_mtmd_init(const char * path, const struct llama_model * model,
                                 struct mtmd_context_params params) {
    return guarded([&] { return mtmd_init_from_file(path, model, params); });
}

// An image (stb_image: png, jpeg, bmp, gif, ...) or audio file (wav, mp3, flac) held in memory.
mtmd_bitmap * pyllama_mtmd_bitmap_from_buf(const mtmd_context * ctx, const unsigned char * buf, size_t len) {
    return guarded([&] {
        mtmd_helper_bitmap_wrapper wrapped =
            mtmd_helper_bitmap_init_from_buf(ctx, buf, len, false, mtmd_helper_init_opt_default());
        if (wrapped.video_ctx != nullptr) {  // not built (MTMD_VIDEO is off); never leak one
            mtmd_helper_video_free(wrapped.video_ctx);
        }
        return wrapped.bitmap;
    });
}

mtmd_bitmap * pyllama_mtmd_bitmap_init(uint32_t nx, uint32_t ny, const unsigned char * data) {
    return guarded([&] { return mtmd_bitmap_init(nx, ny, data); });
}

mtmd_bitmap * pyllama_mtmd_bitmap_init_from_audio(size_t n_samples, const float * data) {
    return guarded([&] { return mtmd_bitmap_init_from_audio(n_samples, data); });
}

// Text and media in order; a media part's image is preprocessed (resized, sliced) here.
int32_t pyllama_mtmd_tokenize(const mtmd_context * ctx, mtmd_input_chunks * output,
                              const mtmd_input_part * const * parts, size_t n_parts, bool add_special) {
    return guarded(int32_t(-1), [&] { return mtmd_tokenize_from_parts(ctx, output, parts, n_parts, add_special); });
}

// The projector's embeddings of a media chunk; 0 on success (they are then mtmd_get_output_embd()).
int32_t pyllama_mtmd_encode_chunk(mtmd_context * ctx, const mtmd_input_chunk * chunk) {
    return guarded(int32_t(-1), [&] { return mtmd_encode_chunk(ctx, chunk); });
}

// Decodes a media chunk's embeddings into the sequence at n_past (non-causal or M-RoPE as the
// model needs); llama_decode's codes come back as they are, -1 also for an assertion or exception.
int32_t pyllama_mtmd_decode_chunk(mtmd_context * ctx, struct llama_context * lctx, const mtmd_input_chunk * chunk,
                                  float * embd, llama_pos n_past, llama_seq_id seq_id, int32_t n_batch,
                                  llama_pos * new_n_past) {
    return guarded(int32_t(-1), [&] {
        return mtmd_helper_decode_image_chunk(ctx, lctx, chunk, embd, n_past, seq_id, n_batch, new_n_past,
                                              nullptr, nullptr);
    });
}

}
