// Gather and scatter kernels between vLLM's paged KV cache and kvtier's contiguous chunks.
//
// Built into java-core/src/main/resources/io/kvtier/cuda/kv_copy.ptx by scripts/build-ptx; the
// PTX is committed so that neither building nor running kvtier needs a CUDA toolkit. The index
// arithmetic is the one of io.kvtier.transfer.PagedLayout and HostKvTransfer (the CPU path, and
// the reference these kernels are checked against); keep the three in step.
//
// One launch moves `count` tokens of layers [first_layer, first_layer + layer_count):
//   grid.x = count (one CUDA block per token), grid.y = layer_count * kv_count, block.x = threads.
// Token t sits in cache slot slots[t] and in chunk row p = skip + t of chunk p / row_tokens,
// whose address is chunks[p / row_tokens]; a chunk holds, per layer, row_tokens tokens of
// token_bytes, as [kv][token][head][d] or, with head_major, as [kv][head][token][d].
// Strides are in bytes; head_row is the bytes of one head's vector (head_size * element bytes).
// Every address, stride and head_row is a multiple of the vector width V (the host checks).

#if defined(__clang__) && !defined(__NVCC__)
// clang -nocudainc: the CUDA headers are absent, so name the attributes and registers directly.
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __forceinline__ __attribute__((always_inline)) inline
#define KV_BLOCK_X() __nvvm_read_ptx_sreg_ctaid_x()
#define KV_BLOCK_Y() __nvvm_read_ptx_sreg_ctaid_y()
#define KV_THREAD_X() __nvvm_read_ptx_sreg_tid_x()
#define KV_THREADS_X() __nvvm_read_ptx_sreg_ntid_x()
#else
#define KV_BLOCK_X() blockIdx.x
#define KV_BLOCK_Y() blockIdx.y
#define KV_THREAD_X() threadIdx.x
#define KV_THREADS_X() blockDim.x
#endif

typedef unsigned long long u64;
typedef long long i64;

#if defined(__clang__) && !defined(__NVCC__)
typedef unsigned int v16 __attribute__((ext_vector_type(4)));  // one ld/st.v4.u32
#else
typedef uint4 v16;
#endif

template <typename V, bool kToCache>
__device__ __forceinline__ void kv_copy(
    const u64* __restrict__ layers, const i64* __restrict__ slots, const u64* __restrict__ chunks,
    int first_layer, int kv_count, i64 kv_stride, i64 block_stride, i64 slot_stride,
    i64 head_stride, int num_heads, int head_row, int block_size, int row_tokens, int skip,
    int head_major) {
  const int t = (int)KV_BLOCK_X();
  const int layer = first_layer + (int)KV_BLOCK_Y() / kv_count;
  const int kv = (int)KV_BLOCK_Y() % kv_count;
  const i64 slot = slots[t];
  const i64 block = slot / block_size;
  const i64 in_block = slot % block_size;
  char* cache = (char*)layers[layer] + kv * kv_stride + block * block_stride +
                in_block * slot_stride;
  const int p = skip + t;
  const i64 row = p % row_tokens;
  const i64 token_bytes = (i64)kv_count * num_heads * head_row;
  char* chunk = (char*)chunks[p / row_tokens] + (i64)layer * row_tokens * token_bytes;
  const int units_per_head = head_row / (int)sizeof(V);
  const int units = units_per_head * num_heads;
  for (int i = (int)KV_THREAD_X(); i < units; i += (int)KV_THREADS_X()) {
    const int h = i / units_per_head;
    const int u = i - h * units_per_head;
    i64 chunk_off;
    if (head_major) {
      chunk_off = (((i64)kv * num_heads + h) * row_tokens + row) * head_row;
    } else {
      chunk_off = (((i64)kv * row_tokens + row) * num_heads + h) * head_row;
    }
    V* c = (V*)(chunk + chunk_off) + u;
    V* k = (V*)(cache + h * head_stride) + u;
    if (kToCache) {
      *k = *c;
    } else {
      *c = *k;
    }
  }
}

#define KV_COPY_ENTRY(name, V, kToCache)                                                      \
  extern "C" __global__ void name(                                                            \
      const u64* layers, const i64* slots, const u64* chunks, int first_layer, int kv_count,  \
      i64 kv_stride, i64 block_stride, i64 slot_stride, i64 head_stride, int num_heads,       \
      int head_row, int block_size, int row_tokens, int skip, int head_major) {               \
    kv_copy<V, kToCache>(layers, slots, chunks, first_layer, kv_count, kv_stride,             \
                         block_stride, slot_stride, head_stride, num_heads, head_row,         \
                         block_size, row_tokens, skip, head_major);                           \
  }

KV_COPY_ENTRY(kvtier_gather_16, v16, false)
KV_COPY_ENTRY(kvtier_gather_8, u64, false)
KV_COPY_ENTRY(kvtier_gather_4, unsigned int, false)
KV_COPY_ENTRY(kvtier_gather_2, unsigned short, false)
KV_COPY_ENTRY(kvtier_gather_1, unsigned char, false)
KV_COPY_ENTRY(kvtier_scatter_16, v16, true)
KV_COPY_ENTRY(kvtier_scatter_8, u64, true)
KV_COPY_ENTRY(kvtier_scatter_4, unsigned int, true)
KV_COPY_ENTRY(kvtier_scatter_2, unsigned short, true)
KV_COPY_ENTRY(kvtier_scatter_1, unsigned char, true)
