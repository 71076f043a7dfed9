// The CPU ops as channel GEMMs over pixels (gemm.h): operand offsets per layout, threading with
// at::parallel_for and the deterministic reduction of backward_weight, each driver instantiated
// for every ISA's kernel set (cpu/kernels.h) and run with the selected one.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/cpu_kernels.h"
#include "cpu/kernels.h"

#if AT_PARALLEL_OPENMP && !defined(_OPENMP)
// at::parallel_for is inline OpenMP code, compiled here: without -fopenmp it quietly runs serially.
#warning "pointwise_cpu.cpp is compiled without -fopenmp: the CPU kernels will use one thread"
#endif

namespace pointwise::cpu {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The grain for at::parallel_for over units of `work_per_unit` multiply-adds each: below 2^17 per
// thread, a second thread costs more than it saves. Copies pass their own minimum.
int64_t grain_for(int64_t work_per_unit, int64_t min_work_per_thread = int64_t{1} << 17) {
  return std::max<int64_t>(1, min_work_per_thread / std::max<int64_t>(1, work_per_unit));
}

// An uninitialised array from the CPU allocator, which aligns it to 64 bytes.
template <typename U>
class Buffer {
 public:
  explicit Buffer(int64_t size) : data_(c10::GetCPUAllocator()->allocate(size * sizeof(U))) {}
  U* get() const { return static_cast<U*>(data_.get()); }

 private:
  at::DataPtr data_;
};

// Where the pixels of the GEMM's grid live in one activation tensor. GEMM pixel
// q = n * out_pixels + oh * out_w + ow is the tensor's pixel (oh * stride_h - pad_h,
// ow * stride_w - pad_w) of image n; tensors on the output grid use stride 1 and no padding.
struct ActivationIndex {
  int64_t out_pixels = 0, out_w = 0;
  int64_t height = 0, width = 0;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  int64_t image_stride = 0, pixel_stride = 0, channel_stride = 0;

  // Offset of channel 0 of output-grid pixel (oh, ow) of image n, or -1 when it lies in the
  // padding.
  int64_t pixel(int64_t n, int64_t oh, int64_t ow) const {
    const int64_t h = oh * stride_h - pad_h, w = ow * stride_w - pad_w;
    if (h < 0 || h >= height || w < 0 || w >= width) return -1;
    return n * image_stride + (h * width + w) * pixel_stride;
  }

  // Whether GEMM pixel q is at q * pixel_stride: the grid is the tensor's own pixels (stride 1, no
  // padding) and each image follows the last one's last pixel (NHWC, or NCHW of one channel).
  bool linear() const {
    return stride_h == 1 && stride_w == 1 && pad_h == 0 && pad_w == 0 && height * width == out_pixels &&
           width == out_w && image_stride == out_pixels * pixel_stride;
  }

  // offsets[i] = the offset of GEMM pixel q0 + i, for `count` pixels; -1 from pixel `pixels` on.
  // Walks the grid instead of dividing for each pixel.
  void pixels_from(int64_t q0, int64_t count, int64_t pixels, int64_t* offsets) const {
    if (linear()) {
      // Nothing to walk: the loop below took 8% of a 16 -> 96 channels_last layer
      // (a profile on an AVX-512 EPYC). The stride is a local: stores through `offsets` would
      // otherwise reload it at every pixel.
      const int64_t stride = pixel_stride, valid = std::clamp<int64_t>(pixels - q0, 0, count);
      for (int64_t i = 0; i < valid; ++i) offsets[i] = (q0 + i) * stride;
      std::fill(offsets + valid, offsets + count, int64_t(-1));
      return;
    }
    int64_t n = q0 / out_pixels, oh = q0 % out_pixels / out_w, ow = q0 % out_w;
    for (int64_t i = 0; i < count; ++i) {
      offsets[i] = q0 + i < pixels ? pixel(n, oh, ow) : -1;
      if (++ow == out_w) {
        ow = 0;
        if (++oh * out_w == out_pixels) {
          oh = 0;
          ++n;
        }
      }
    }
  }
};

ActivationIndex activation_index(const ConvGeometry& g, int64_t channels, bool input_grid) {
  ActivationIndex index;
  index.out_pixels = g.out_pixels();
  index.out_w = g.out_w;
  index.height = input_grid ? g.in_h : g.out_h;
  index.width = input_grid ? g.in_w : g.out_w;
  if (input_grid) {
    index.stride_h = g.stride_h;
    index.stride_w = g.stride_w;
    index.pad_h = g.pad_h;
    index.pad_w = g.pad_w;
  }
  const int64_t plane = index.height * index.width;
  index.image_stride = channels * plane;
  index.pixel_stride = g.channels_last ? channels : 1;
  index.channel_stride = g.channels_last ? 1 : plane;
  return index;
}

// dst(q, c) = act(sum_k weight(c, k) * src(q, k) + bias(c) + residual(q, c)) for every pixel q of
// the output grid and every channel c of each group; forward is src = input, dst = output, and
// backward_input is src = grad_output, dst = grad_input with the weight transposed. In group g,
// depth step k is source channel g * depth + k and c is destination channel g * channels + c.
template <typename T>
struct PixelGemm {
  const T* src = nullptr;
  ActivationIndex src_index;
  int64_t depth = 0;
  T* dst = nullptr;
  ActivationIndex dst_index;
  int64_t channels = 0;
  // weight(c, k) of group g is weight[g * channels * depth + c * weight_channel_stride + k *
  // weight_depth_stride].
  const T* weight = nullptr;
  int64_t weight_channel_stride = 0, weight_depth_stride = 0;
  const T* bias = nullptr;      // [groups * channels] or null
  const T* residual = nullptr;  // on dst's offsets, or null
  Activation activation = Activation::kNone;
  int64_t groups = 1, pixels = 0;
};

// Packs every group's weight into `packed`: panels of Width channels over the full depth, group
// after group, for all tasks to share.
template <int Width, typename T, typename P, int kGroup>
void pack_weights(const PixelGemm<T>& pg, const Panels<P, kGroup>& packed) {
  const int64_t panels_per_group = packed.count / pg.groups;
  // 2^13 copies a thread at least. At the GEMM's 2^17, weights up to a megabyte packed on one thread
  // while the other waited: on 2 threads of an AVX2 EPYC, NHWC, 96 -> 576 at 7x7 (batch 1) took
  // 1.4x as long as now, 1152 -> 48 at 1x1 (batch 4) 1.4x, 576 -> 160 at 7x7 (batch 4) 1.1x; 2^12
  // gained nothing more, and layers whose weights are a few kilobytes did not change.
  at::parallel_for(0, packed.count, grain_for(Width * pg.depth, int64_t{1} << 13), [&](int64_t begin, int64_t end) {
    std::vector<int64_t> depth_offsets(pg.depth);
    for (int64_t k = 0; k < pg.depth; ++k) depth_offsets[k] = k * pg.weight_depth_stride;
    int64_t line_offsets[Width];
    for (int64_t panel = begin; panel < end; ++panel) {
      const int64_t g = panel / panels_per_group, first = panel % panels_per_group * Width;
      for (int r = 0; r < Width; ++r) {
        line_offsets[r] = first + r < pg.channels ? (first + r) * pg.weight_channel_stride : -1;
      }
      pack_panels<Width>(packed.from(panel, 1), pg.weight + g * pg.channels * pg.depth,
                         line_offsets, depth_offsets.data(), pg.depth, pg.weight_depth_stride == 1);
    }
  });
}

// Pixels go on the side of the tile that is contiguous in memory: columns (the vector dimension)
// for NCHW, where a channel's pixels are consecutive, and rows for NHWC, whose channels are.
template <class K, typename T, bool kPixelsAreColumns>
void run_pixel_gemm(const PixelGemm<T>& pg) {
  using Acc = typename K::Acc;
  using Pack = Panels<typename K::Packed, K::kDepthGroup>;
  using Shape = typename K::Tile;
  using Block = typename K::Blocking;
  constexpr int kPixelWidth = kPixelsAreColumns ? Shape::kCols : Shape::kRows;
  constexpr int kChannelWidth = kPixelsAreColumns ? Shape::kRows : Shape::kCols;
  // A task packs (or reads in place) one cache block of pixel panels over the full depth and runs
  // it against all the group's channels, so each input pixel is read from memory once.
  constexpr int64_t kTaskPanels = kPixelsAreColumns ? Block::kColPanels : Block::kRowPanels;

  const int64_t channel_panels = ceil_div(pg.channels, kChannelWidth);
  const int64_t group_channels = channel_panels * kChannelWidth;  // padded to whole panels
  Buffer<typename K::Packed> weight_buffer(
      Pack::capacity(pg.groups * channel_panels, kChannelWidth, pg.depth));
  const Pack weights =
      kPixelsAreColumns ? Pack::for_a(weight_buffer.get(), pg.groups * channel_panels,
                                      kChannelWidth, pg.depth, pg.weight_depth_stride == 1 || AInRows<K>::value)
                        : Pack::interleaved(weight_buffer.get(), pg.groups * channel_panels,
                                            kChannelWidth, pg.depth);
  pack_weights<kChannelWidth>(pg, weights);

  // Per group and padded channel: the destination offset (-1 for padding) and the bias.
  std::vector<int64_t> channel_offsets(pg.groups * group_channels);
  std::vector<Acc> bias(pg.bias != nullptr ? pg.groups * group_channels : 0);
  for (int64_t g = 0; g < pg.groups; ++g) {
    for (int64_t c = 0; c < group_channels; ++c) {
      const int64_t channel = g * pg.channels + c;
      const bool real = c < pg.channels;
      channel_offsets[g * group_channels + c] = real ? channel * pg.dst_index.channel_stride : -1;
      if (pg.bias != nullptr)
        bias[g * group_channels + c] = real ? static_cast<Acc>(pg.bias[channel]) : Acc(0);
    }
  }
  std::vector<int> channel_runs(pg.groups * channel_panels);
  for (int64_t g = 0; g < pg.groups; ++g) {
    contiguous_runs(channel_offsets.data() + g * group_channels, channel_panels, kChannelWidth,
                    channel_runs.data() + g * channel_panels);
  }
  TileEpilogue<Acc, T> epilogue;
  epilogue.bias_on_rows = kPixelsAreColumns;
  epilogue.residual = pg.residual;
  epilogue.activation = pg.activation;
  epilogue.finish_in_place = K::finish_in_place;
  epilogue.stream = true;
  if constexpr (!std::is_same_v<T, Acc>) epilogue.store_contiguous = K::template store_contiguous<T>;

  const int64_t pixel_panels = ceil_div(pg.pixels, kPixelWidth);
  // Units are (span of pixel panels, group, block of channel panels, pixel panel of the span); each
  // thread takes a contiguous run and cuts it into tasks. Which unit computes a tile changes no sum,
  // so results do not depend on the split.
  //
  // The channels are cut into blocks where that lowers what each thread reads, or where the pixel
  // panels alone leave threads idle or unevenly loaded (7x7 and 1x1 maps). A thread reads the
  // weights of its channel blocks (channels x depth) and the pixels of its units (pixels x depth):
  // split by pixels, every thread reads all the weights; split by channels, all the pixels, which in
  // NCHW it also packs (a transposing copy: twice a read, counted). So a group with more channels
  // than pixels (than twice its pixels in NCHW) gets a block per thread at least. On 2 threads of an
  // AVX2 EPYC, split by pixels, 512 -> 2048 at 7x7 took 1.55x as long (NCHW, batch 1) and 1.28x
  // (NHWC, batch 2), 256 -> 1024 at 14x14 1.17x (NCHW, batch 2); split by channels, 512 -> 128 at
  // 28x28 took 1.10x as long, 2048 -> 512 at 7x7 (NCHW, batch 4) 1.02x. In bfloat16 (converted to
  // float while packed there), split by pixels took 1.1-2.4x as long on those layers (512 -> 2048 at
  // 7x7, batch 2: 2.2x NHWC, 1.5x NCHW). Then the fewest blocks that give every thread two units and
  // the busiest thread at most 5% more than the average.
  //
  // The pixels are one span, so that units run group by group, except where the groups share cache
  // lines: NHWC with groups of channels that are not whole 64-byte lines, in the input or the
  // output. There a span is one task's pixels and every group runs on it in turn, while its lines
  // are in cache. Group by group, on 2 threads of an AVX2 EPYC (ShuffleNetV2's layers in 3 groups,
  // batch 2), 240 -> 60 at 28x28 took 1.35-1.5x as long and 60 -> 216 1.06-1.15x; at 14x14, whose
  // maps stay in L2, spans cost 2% (120 -> 240), and 3.5% where the groups are whole lines
  // (480 -> 240). The spans are of equal size: the units past the last pixel panel, at the end of the
  // last span, are fewer than the spans.
  const int64_t threads = at::get_num_threads();
  auto busiest_over_average = [&](int64_t blocks) {
    const int64_t units = pg.groups * pixel_panels * blocks;
    return static_cast<double>(ceil_div(units, threads) * threads) / static_cast<double>(units);
  };
  int64_t wanted_blocks = std::clamp<int64_t>(ceil_div(2 * threads, pg.groups * pixel_panels), 1, channel_panels);
  const int64_t pixel_read_cost = kPixelsAreColumns ? 2 : 1;
  if (pg.channels > pixel_read_cost * pg.pixels) {
    wanted_blocks = std::clamp<int64_t>(threads, wanted_blocks, channel_panels);
  }
  while (wanted_blocks < channel_panels && busiest_over_average(wanted_blocks) > 1.05) ++wanted_blocks;
  const int64_t block_panels = ceil_div(channel_panels, wanted_blocks);
  const int64_t channel_blocks = ceil_div(channel_panels, block_panels);
  constexpr int64_t kLineBytes = 64;
  const bool groups_share_lines = !kPixelsAreColumns && pg.groups > 1 &&
                                  (pg.depth * static_cast<int64_t>(sizeof(T)) % kLineBytes != 0 ||
                                   pg.channels * static_cast<int64_t>(sizeof(T)) % kLineBytes != 0);
  const int64_t spans = groups_share_lines ? ceil_div(pixel_panels, kTaskPanels) : 1;
  const int64_t span_panels = ceil_div(pixel_panels, spans);
  const int64_t work_per_panel = kPixelWidth * pg.depth * block_panels * kChannelWidth;
  const bool src_linear = pg.src_index.linear();
  // With pixels on the columns, C's rows are channels a plane apart: its tiles run along the rows
  // where the planes are a page or more apart and the task's pixels (B) stay in L1 while each
  // channel panel runs against them (gemm.h's TileOrder).
  constexpr int64_t kL1Bytes = 32 << 10;
  const bool planes_pages_apart = pg.dst_index.channel_stride * static_cast<int64_t>(sizeof(T)) >= 4096;
  const bool pixels_fit_l1 =
      kTaskPanels * kPixelWidth * pg.depth * static_cast<int64_t>(sizeof(typename K::Packed)) <= kL1Bytes;
  const TileOrder pixel_tile_order = kPixelsAreColumns && planes_pages_apart && pixels_fit_l1
                                         ? TileOrder::kAlongRows
                                         : TileOrder::kDownColumns;
  at::parallel_for(
      0, spans * pg.groups * channel_blocks * span_panels, grain_for(work_per_panel), [&](int64_t begin, int64_t end) {
        Buffer<typename K::Packed> pixel_buffer(Pack::capacity(kTaskPanels, kPixelWidth, pg.depth));
        Buffer<Acc> accumulators(Block::kAccumulatorSize);
        std::vector<int64_t> src_pixels(kTaskPanels * kPixelWidth),
            dst_pixels(kTaskPanels * kPixelWidth);
        std::vector<int> dst_pixel_runs(kPixelsAreColumns ? kTaskPanels : 0);
        std::vector<int64_t> depth_offsets(pg.depth);
        for (int64_t unit = begin; unit < end;) {
          const int64_t span = unit / (pg.groups * channel_blocks * span_panels), in_span = unit % span_panels;
          const int64_t g = unit / (channel_blocks * span_panels) % pg.groups;
          const int64_t first_channel_panel = unit / span_panels % channel_blocks * block_panels;
          const int64_t block_channel_panels = std::min(block_panels, channel_panels - first_channel_panel);
          const int64_t first_panel = span * span_panels + in_span;
          const int64_t task_units = std::min({kTaskPanels, span_panels - in_span, end - unit});
          const int64_t panels = std::min(task_units, pixel_panels - first_panel);
          if (panels <= 0) {  // the padding at the end of the last span
            unit += task_units;
            continue;
          }
          const int64_t q0 = first_panel * kPixelWidth, lines = panels * kPixelWidth;
          pg.src_index.pixels_from(q0, lines, pg.pixels, src_pixels.data());
          pg.dst_index.pixels_from(q0, lines, pg.pixels, dst_pixels.data());
          if constexpr (kPixelsAreColumns)
            contiguous_runs(dst_pixels.data(), panels, kPixelWidth, dst_pixel_runs.data());
          for (int64_t k = 0; k < pg.depth; ++k) {
            depth_offsets[k] = (g * pg.depth + k) * pg.src_index.channel_stride;
          }
          const bool depth_unit_stride = unit_stride(depth_offsets.data(), pg.depth);
          // NHWC pixels that need no conversion, with evenly spaced rows (no stride, padding or
          // tensor end within the task), are read in place: copying them only adds a pass over
          // memory (1.3x on a 32->16 layer). Rows a multiple of 4 KiB apart would share one L1 set:
          // those are copied. A linear grid's rows are evenly spaced up to its last pixel, unchecked.
          const int64_t row_stride = src_pixels[1] - src_pixels[0];
          // With pairs, an odd depth needs the zero step that only packing adds.
          const bool in_place = !kPixelsAreColumns && std::is_same_v<T, typename K::Packed> && depth_unit_stride &&
                                pg.depth % K::kDepthGroup == 0 && row_stride * sizeof(T) % 4096 != 0 &&
                                (src_linear ? q0 + lines <= pg.pixels : evenly_spaced(src_pixels.data(), lines, row_stride));
          Pack pixels;
          if (in_place) {
            const auto* first =
                reinterpret_cast<const typename K::Packed*>(pg.src) + src_pixels[0] + depth_offsets[0];
            pixels = Pack::in_place(first, panels, kPixelWidth, row_stride);
          } else {
            pixels = kPixelsAreColumns
                         ? Pack::depth_major(pixel_buffer.get(), panels, kPixelWidth)
                         : Pack::for_a(pixel_buffer.get(), panels, kPixelWidth, pg.depth,
                                       depth_unit_stride || AInRows<K>::value);
            pack_panels<kPixelWidth>(pixels, pg.src, src_pixels.data(), depth_offsets.data(),
                                     pg.depth, depth_unit_stride);
          }

          const Pack block_weights = weights.from(g * channel_panels + first_channel_panel, block_channel_panels);
          const int64_t block_channel = g * group_channels + first_channel_panel * kChannelWidth;
          const int64_t* block_channel_offsets = channel_offsets.data() + block_channel;
          const Acc* block_bias = pg.bias != nullptr ? bias.data() + block_channel : nullptr;
          // Offsets in the destination of the rows of A panel a_panel and of the columns of B panel
          // b_panel.
          auto tile_rows = [&](int64_t a_panel) {
            return kPixelsAreColumns ? block_channel_offsets + a_panel * kChannelWidth
                                     : dst_pixels.data() + a_panel * kPixelWidth;
          };
          auto tile_cols = [&](int64_t b_panel) {
            return kPixelsAreColumns
                       ? TileColumns{dst_pixels.data() + b_panel * kPixelWidth, dst_pixel_runs[b_panel]}
                       : TileColumns{block_channel_offsets + b_panel * kChannelWidth,
                                     channel_runs[g * channel_panels + first_channel_panel + b_panel]};
          };
          auto tile_bias = [&](int64_t a_panel, int64_t b_panel) -> const Acc* {
            const int64_t channel_panel = kPixelsAreColumns ? a_panel : b_panel;
            return block_bias != nullptr ? block_bias + channel_panel * kChannelWidth : nullptr;
          };
          auto destination = [&](int64_t a_panel, int64_t b_panel) {
            return direct_destination<Shape>(pg.dst, tile_rows(a_panel), tile_cols(b_panel),
                                             tile_bias(a_panel, b_panel), epilogue);
          };
          auto finish = [&](const TileDestination<Acc>& written, bool direct, int64_t a_panel,
                            int64_t b_panel) {
            finish_tile<Shape>(written, direct, tile_rows(a_panel), tile_cols(b_panel),
                               tile_bias(a_panel, b_panel), epilogue, pg.dst);
          };
          if constexpr (kPixelsAreColumns) {
            gemm_packed<K>(block_weights, pixels, pg.depth, accumulators.get(), destination, finish, pixel_tile_order);
          } else {
            gemm_packed<K>(pixels, block_weights, pg.depth, accumulators.get(), destination, finish, pixel_tile_order);
          }
          unit += task_units;
        }
#ifdef POINTWISE_CPU_X86
        // Streamed stores are weakly ordered: visible to every thread once the threads join.
        __builtin_ia32_sfence();
#endif
      });
}

// Whether the GEMM puts pixels on the tiles' columns (their vectors) rather than on their rows:
// where pixels are contiguous (NCHW), and channels otherwise (NHWC). Images of one pixel
// (squeeze-excite layers) are the same bytes in both layouts: their few pixels (the batch) go on
// the columns of a 16-column tile (gemm.h packs the weight's rows as A by copying them), many on the
// rows.
bool pixels_are_columns(const ConvGeometry& g, int64_t pixels) {
  if (g.in_pixels() == 1 && g.out_pixels() == 1) return pixels <= 16;
  return !g.channels_last;
}

// How the ops choose a kernel set: f(KernelSetTag<K>{}) for the selected ISA's set for T, the one of
// its tile widths that pads `columns` least. (The tests run the drivers with an emulated one too.)
struct SelectedKernelSet {
  template <typename T, typename F>
  static void dispatch(int64_t columns, F&& f) {
    dispatch_isa([&](auto isa) { dispatch_width<KernelSet<decltype(isa)::value, T>>(columns, f); });
  }
};

template <typename T, class Kernels>
void run_pixel_gemm(const PixelGemm<T>& pg, const ConvGeometry& g) {
  const bool pixels_are_columns = cpu::pixels_are_columns(g, pg.pixels);
  const int64_t columns = pixels_are_columns ? std::min(g.out_pixels() == 1 ? pg.pixels : g.out_pixels(), pg.pixels)
                                             : pg.channels;
  Kernels::template dispatch<T>(columns, [&](auto kernels) {
    dispatch_bool(pixels_are_columns, [&](auto as_columns) {
      run_pixel_gemm<typename decltype(kernels)::type, T, decltype(as_columns)::value>(pg);
    });
  });
}

template <typename T, class Kernels = SelectedKernelSet>
void forward_typed(const ForwardArgs& args) {
  const ConvGeometry& g = args.geometry;
  PixelGemm<T> pg;
  pg.src = args.input.const_data_ptr<T>();
  pg.src_index = activation_index(g, g.in_channels, /*input_grid=*/true);
  pg.depth = g.in_channels_per_group();
  pg.dst = args.output.mutable_data_ptr<T>();
  pg.dst_index = activation_index(g, g.out_channels, /*input_grid=*/false);
  pg.channels = g.out_channels_per_group();
  pg.weight = args.weight.const_data_ptr<T>();
  pg.weight_channel_stride = pg.depth;  // weight[c_out][c_in]
  pg.weight_depth_stride = 1;
  pg.bias = args.bias.defined() ? args.bias.const_data_ptr<T>() : nullptr;
  pg.residual = args.residual.defined() ? args.residual.const_data_ptr<T>() : nullptr;
  pg.activation = args.activation;
  pg.groups = g.groups;
  pg.pixels = g.batch * g.out_pixels();
  run_pixel_gemm<T, Kernels>(pg, g);
}

template <typename T, class Kernels = SelectedKernelSet>
void backward_input_typed(const BackwardInputArgs& args) {
  const ConvGeometry& g = args.geometry;
  PixelGemm<T> pg;
  pg.src = args.grad_output.const_data_ptr<T>();
  pg.src_index = activation_index(g, g.out_channels, /*input_grid=*/false);
  pg.depth = g.out_channels_per_group();
  // Output pixels whose input pixel is in the padding get offset -1 and are not written.
  pg.dst = args.grad_input.mutable_data_ptr<T>();
  pg.dst_index = activation_index(g, g.in_channels, /*input_grid=*/true);
  pg.channels = g.in_channels_per_group();
  pg.weight = args.weight.const_data_ptr<T>();
  pg.weight_channel_stride = 1;  // the transpose of weight[c_out][c_in]
  pg.weight_depth_stride = pg.channels;
  pg.groups = g.groups;
  pg.pixels = g.batch * g.out_pixels();
  run_pixel_gemm<T, Kernels>(pg, g);
}

// backward_weight's units pack their chunk's pixels a slice at a time, the sums going on from slice
// to slice, so that their packing buffers hold a slice of A's block and of B: packing all of a chunk
// of 4096 pixels for a 4096 x 4096 weight took 67 MB a thread. A multiple of every kernel set's
// depth block (and depth group), so the sums are those of one pass over the chunk, bit for bit.
constexpr int64_t kReductionSlice = 512;

// Pixels per partial sum of backward_weight, in chunks of near-equal length. It depends on the
// sizes only, never on the thread count, so the partial sums and their fixed-order reduction give
// the same bits on every run. At most a slice, so that a chunk is packed in one pass (chunks of 523
// pixels, as 6272 or 1568 pixels made, ran a second slice of 11); more than 2 chunks are a multiple
// of 4, which 1, 2 and 4 threads share evenly and which keeps them over half a slice; and few
// enough that the partial sums fit in 64 MiB of floats (longer chunks are sliced). Grad-weight of
// ResNet-50's and MobileNetV2's 1x1 layers (2 threads, batch 2 and 4, an AVX2 Zen 2 EPYC, processes
// alternated), time against chunks of pixels / 512 rounded down and two units a thread (see
// wanted_blocks): geomean 0.93 channels_last, 0.90-0.93 NCHW; 56x56 and 28x28 layers 0.82-0.95,
// 2048 -> 512 at 7x7 NCHW batch 4 0.66; at most 1.06 (256 -> 1024 at 14x14 NCHW).
int64_t reduction_chunk(int64_t pixels, int64_t weight_size) {
  constexpr int64_t kMaxPartialValues = int64_t{1} << 24;
  const int64_t max_chunks = std::max<int64_t>(1, kMaxPartialValues / weight_size);
  int64_t chunks = ceil_div(pixels, kReductionSlice);
  if (chunks > 2) chunks = ceil_div(chunks, 4) * 4;
  return ceil_div(pixels, std::min(max_chunks, chunks));
}

// One operand of backward_weight's GEMM: the channels of one activation over the pixels.
template <typename T>
struct WeightGradOperand {
  const T* data = nullptr;
  ActivationIndex index;
  int64_t channels = 0;       // per group
  int64_t weight_stride = 0;  // channel c's sums go to grad_weight[group base + c * weight_stride]
};

// grad_weight[c_out][c_in] = sum over pixels of grad_output(q, c_out) * input(q, c_in): a GEMM
// whose depth is the pixels, cut into chunks whose partial sums are reduced in a fixed order.
template <class K, typename T>
void backward_weight_typed(const BackwardWeightArgs& args) {
  using Acc = typename K::Acc;
  using Pack = Panels<typename K::Packed, K::kDepthGroup>;
  using Shape = typename K::Tile;
  using Block = typename K::Blocking;
  const ConvGeometry& g = args.geometry;
  const int64_t in_channels = g.in_channels_per_group(), out_channels = g.out_channels_per_group();
  const WeightGradOperand<T> grad_output{args.grad_output.const_data_ptr<T>(),
                                         activation_index(g, g.out_channels, /*input_grid=*/false),
                                         out_channels, in_channels};
  const WeightGradOperand<T> input{args.input.const_data_ptr<T>(),
                                   activation_index(g, g.in_channels, /*input_grid=*/true),
                                   in_channels, 1};
  const int64_t group_weight_size = out_channels * in_channels;
  const int64_t weight_size = g.groups * group_weight_size;
  const int64_t pixels = g.batch * g.out_pixels();
  const int64_t chunk = reduction_chunk(pixels, weight_size);
  const int64_t chunks = ceil_div(pixels, chunk);
  static_assert(kReductionSlice % Block::kDepth == 0 && kReductionSlice % K::kDepthGroup == 0,
                "slices are whole depth blocks");
  // Each unit packs all of B. Units cut A into blocks where the chunks alone leave threads idle:
  // a unit per thread (near-equal). Two a thread packed B twice as often, and by the model below
  // left the input on A with scattered stores (1024 -> 512 at 14x14 NCHW took 0.72-0.84x the time
  // with one: the grad output goes to A). The split does not change any sum, only who computes it,
  // and neither does which operand is A (each sum takes the same products in the same order).
  const int64_t wanted_blocks = ceil_div(at::get_num_threads(), chunks * g.groups);
  // Which operand is A is a matter of packing and storing cost; it changes no sum. Measured on an
  // AVX2 EPYC, batch 2, 2 threads:
  //  - B is packed once per unit. In NCHW that packing transposes (B's lines, channels, are not
  //    contiguous), so the operand with fewer channels goes there. In NHWC, A's panels copy
  //    Shape::kRows channels per pixel and B's Shape::kCols, so the operand with more channels goes
  //    to B; except where units cut A into blocks and B is packed once per block: there the grad
  //    output goes to A (320 -> 1280, 512 -> 2048 and 1024 -> 2048 at 7x7 took 0.6-0.7x the time).
  //  - Tiles go straight to grad_weight only when B is the input, whose channels are grad_weight's
  //    contiguous dimension. Otherwise each tile is scattered over Shape::kCols of its rows, and
  //    rows a multiple of 4 KiB apart share one L1 set and evict each other: 2048 -> 512 at 7x7
  //    (NCHW) spent 30% of its time in those stores. With its input on B it spent 13% more in
  //    transposing instead, and took 0.7-0.8x the time. In NCHW the input goes to B there when the
  //    scattered stores cost more than the added transposing, in a model: a scattered tile costs as
  //    much as transposing kScatteredTileCost elements. With one unit a thread (batch 2 and 4,
  //    processes alternated), layers whose added transposing came to at most 257 elements a
  //    scattered tile took 0.5-0.86x the time moved (1024 -> 256 and 2048 -> 256 at 14x14, 1024
  //    -> 48 at 4x4); at 550-630 one gained 7% and another lost 10%, and at 1157-2641 moving lost
  //    up to 2.3x (4096 -> 64 at 14x14, 1024 -> 16 at 28x28).
  constexpr int64_t kScatteredTileCost = 400;
  const bool scattered_rows_alias = in_channels * static_cast<int64_t>(sizeof(Acc)) % 4096 == 0;
  const int64_t a_blocks_at_most = std::max<int64_t>(1, wanted_blocks);
  const int64_t scattered_tiles = ceil_div(in_channels, Shape::kRows) * ceil_div(out_channels, Shape::kCols) *
                                  ceil_div(pixels, kReductionSlice) * g.groups;
  const int64_t added_transposing = (in_channels - out_channels) * pixels * a_blocks_at_most * g.groups;
  const bool grad_output_is_a =
      g.channels_last ? out_channels <= in_channels || wanted_blocks > 1 || scattered_rows_alias
                      : out_channels >= in_channels ||
                            (scattered_rows_alias && scattered_tiles * kScatteredTileCost > added_transposing);
  const WeightGradOperand<T>& a_side = grad_output_is_a ? grad_output : input;
  const WeightGradOperand<T>& b_side = grad_output_is_a ? input : grad_output;

  const int64_t a_panels = ceil_div(a_side.channels, Shape::kRows);
  const int64_t b_panels = ceil_div(b_side.channels, Shape::kCols);
  const int64_t a_block = ceil_div(a_panels, std::min(a_panels, wanted_blocks));
  const int64_t a_blocks = ceil_div(a_panels, a_block);
  // The partial sums of chunk c; those of chunk 0 go straight to grad_weight when it has the
  // accumulation type, which saves a buffer and a copy when there is one chunk.
  T* grad_weight = args.grad_weight.mutable_data_ptr<T>();
  constexpr bool kSumInOutput = std::is_same_v<T, Acc>;
  Buffer<Acc> partials((kSumInOutput ? chunks - 1 : chunks) * weight_size);
  auto chunk_sums = [&](int64_t c) {
    if constexpr (kSumInOutput) {
      return c == 0 ? grad_weight : partials.get() + (c - 1) * weight_size;
    } else {
      return partials.get() + c * weight_size;
    }
  };

  const int64_t work_per_unit = std::min(chunk, pixels) * a_block * Shape::kRows * b_side.channels;
  const int64_t slice = std::min(chunk, kReductionSlice);
  // Units are (chunk, group, block of A's channels); a unit packs its A block and all of B.
  at::parallel_for(
      0, chunks * g.groups * a_blocks, grain_for(work_per_unit), [&](int64_t begin, int64_t end) {
        Buffer<typename K::Packed> a_buffer(Pack::capacity(a_block, Shape::kRows, slice));
        Buffer<typename K::Packed> b_buffer(Pack::capacity(b_panels, Shape::kCols, slice));
        Buffer<Acc> accumulators(Block::kAccumulatorSize);
        std::vector<int64_t> a_pixels(slice), b_pixels(slice);
        std::vector<int64_t> a_lines(a_block * Shape::kRows), b_lines(b_panels * Shape::kCols);
        std::vector<int64_t> rows(a_block * Shape::kRows), cols(b_panels * Shape::kCols);
        std::vector<int> col_runs(b_panels);
        // Where the operand's channels first, first + 1, ... are read from (lines) and where their
        // sums go (sums); -1 past the group's channels.
        auto channel_offsets = [](const WeightGradOperand<T>& side, int64_t group, int64_t first,
                                  int64_t count, int64_t* lines, int64_t* sums) {
          for (int64_t i = 0; i < count; ++i) {
            const int64_t channel = first + i;
            const bool real = channel < side.channels;
            lines[i] = real ? (group * side.channels + channel) * side.index.channel_stride : -1;
            sums[i] = real ? channel * side.weight_stride : -1;
          }
        };
        for (int64_t unit = begin; unit < end; ++unit) {
          const int64_t c = unit / (g.groups * a_blocks), group = unit / a_blocks % g.groups;
          const int64_t a_first = unit % a_blocks * a_block,
                        a_count = std::min(a_block, a_panels - a_first);
          channel_offsets(a_side, group, a_first * Shape::kRows, a_count * Shape::kRows,
                          a_lines.data(), rows.data());
          channel_offsets(b_side, group, 0, b_panels * Shape::kCols, b_lines.data(), cols.data());
          contiguous_runs(cols.data(), b_panels, Shape::kCols, col_runs.data());
          Acc* partial = chunk_sums(c) + group * group_weight_size;
          const TileEpilogue<Acc, T> plain;
          const Acc* no_bias = nullptr;
          auto tile_rows = [&](int64_t a_panel) { return rows.data() + a_panel * Shape::kRows; };
          auto tile_cols = [&](int64_t b_panel) {
            return TileColumns{cols.data() + b_panel * Shape::kCols, col_runs[b_panel]};
          };
          auto destination = [&](int64_t a_panel, int64_t b_panel) {
            return direct_destination<Shape>(partial, tile_rows(a_panel), tile_cols(b_panel), no_bias, plain);
          };
          auto finish = [&](const TileDestination<Acc>& written, bool direct, int64_t a_panel, int64_t b_panel) {
            finish_tile<Shape>(written, direct, tile_rows(a_panel), tile_cols(b_panel), no_bias, plain, partial);
          };
          // Where an operand's lines `first`, ... first + count - 1 can be read in place over the
          // `depth` pixels at pixel_offsets (null: they are packed): NHWC channels, every line a real
          // channel, pixels evenly spaced (no stride or padding), no conversion, and pixels at most
          // kInPlaceBytes apart. Packing a layer of few channels over many pixels copies a handful
          // of values per pixel and line: read in place, channels_last layers of 16-64 channels
          // took 0.83-0.97x the time (batch 2, 2 threads, an AVX2 EPYC; 32 -> 16 at 112x112, 0.89x).
          auto in_place = [&](const WeightGradOperand<T>& side, int64_t group, int64_t first, int64_t count,
                              const int64_t* pixel_offsets, int64_t depth) -> const typename K::Packed* {
            constexpr int64_t kInPlaceBytes = 256;
            if constexpr (std::is_same_v<T, typename K::Packed> && K::kDepthGroup == 1) {
              const int64_t stride = side.index.pixel_stride;
              if (side.index.channel_stride == 1 && first + count <= side.channels &&
                  stride * static_cast<int64_t>(sizeof(T)) <= kInPlaceBytes &&
                  evenly_spaced(pixel_offsets, depth, stride))
                return side.data + pixel_offsets[0] + group * side.channels + first;
            }
            return nullptr;
          };
          // Where A's lines `first`, ... can be read in place as rows over the `depth` pixels at
          // pixel_offsets (null: they are packed): NCHW channels, whose pixels are contiguous, every
          // line a real channel, the pixels consecutive (one image, no stride or padding), no
          // conversion, and lines not a multiple of 4 KiB apart (they would share L1 sets). Packing
          // them only copied each line: read in place, layers at 56x56 and 112x112 took 0.69-0.88x
          // the time (batch 4, one thread, an AVX2 EPYC, interleaved with the build that packed them).
          auto rows_in_place = [&](const WeightGradOperand<T>& side, int64_t group, int64_t first, int64_t count,
                                   const int64_t* pixel_offsets, int64_t depth) -> const typename K::Packed* {
            if constexpr (std::is_same_v<T, typename K::Packed> && K::kDepthGroup == 1) {
              const int64_t line_stride = side.index.channel_stride;
              if (side.index.pixel_stride == 1 && first + count <= side.channels &&
                  line_stride * static_cast<int64_t>(sizeof(T)) % 4096 != 0 && unit_stride(pixel_offsets, depth))
                return side.data + pixel_offsets[0] + (group * side.channels + first) * line_stride;
            }
            return nullptr;
          };
          // After the first slice, a tile's sum goes on from what the slices before stored.
          auto stored = [&](int64_t a_panel, int64_t b_panel, Acc* tile) {
            const int64_t *r = tile_rows(a_panel), *k = tile_cols(b_panel).offsets;
            for (int i = 0; i < Shape::kRows; ++i) {
              for (int j = 0; j < Shape::kCols; ++j)
                tile[i * Shape::kCols + j] = r[i] < 0 || k[j] < 0 ? Acc(0) : partial[r[i] + k[j]];
            }
          };
          const int64_t q_begin = c * chunk, q_end = std::min(q_begin + chunk, pixels);
          for (int64_t q0 = q_begin; q0 < q_end; q0 += slice) {
            const int64_t depth = std::min(slice, q_end - q0);
            a_side.index.pixels_from(q0, depth, pixels, a_pixels.data());
            b_side.index.pixels_from(q0, depth, pixels, b_pixels.data());
            const auto* b_source = in_place(b_side, group, 0, b_panels * Shape::kCols, b_pixels.data(), depth);
            Pack b;
            if (b_source != nullptr) {
              b = Pack::strided(b_source, b_panels, Shape::kCols, b_side.index.pixel_stride);
            } else {
              b = Pack::interleaved(b_buffer.get(), b_panels, Shape::kCols, depth);
              pack_panels<Shape::kCols>(b, b_side.data, b_lines.data(), b_pixels.data(), depth,
                                        unit_stride(b_pixels.data(), depth));
            }
            // The product of A's panels from `first` on (as `a`) with B, into their tiles.
            auto multiply = [&](const Pack& a, int64_t first) {
              auto panel_destination = [&](int64_t a_panel, int64_t b_panel) { return destination(first + a_panel, b_panel); };
              auto panel_finish = [&](const TileDestination<Acc>& written, bool direct, int64_t a_panel, int64_t b_panel) {
                finish(written, direct, first + a_panel, b_panel);
              };
              if (q0 == q_begin) {
                gemm_packed<K>(a, b, depth, accumulators.get(), panel_destination, panel_finish, TileOrder::kDownColumns);
              } else {
                auto panel_stored = [&](int64_t a_panel, int64_t b_panel, Acc* tile) { stored(first + a_panel, b_panel, tile); };
                gemm_packed<K>(a, b, depth, accumulators.get(), panel_destination, panel_finish, TileOrder::kDownColumns,
                               panel_stored);
              }
            };
            // A's panels packed from `first` on.
            auto packed_a = [&](int64_t first) {
              // In rows where the pixels run consecutively (one image, or long runs of several):
              // packing copies each line's runs, rather than transposing them.
              const bool a_unit_stride = unit_stride(a_pixels.data(), depth);
              const bool a_in_rows = a_unit_stride || (K::kDepthGroup == 1 && in_long_runs(a_pixels.data(), depth));
              const Pack a = Pack::for_a(a_buffer.get(), a_count - first, Shape::kRows, depth,
                                         a_in_rows || AInRows<K>::value);
              pack_panels<Shape::kRows>(a, a_side.data, a_lines.data() + first * Shape::kRows, a_pixels.data(), depth,
                                        a_unit_stride);
              return a;
            };
            // A's panels whose lines are all real channels, read in place where they can be (NHWC
            // channels, or NCHW rows); the last may not be, and is packed, in a pass of its own over
            // all of B. In NHWC that pass pays only where B has few panels (2 threads, batch 2 and 4,
            // an AVX2 EPYC, processes alternated, time against packing all of A): with 2-12 B
            // panels 0.86-0.98 (32 -> 16 and 16 -> 96 at 112x112, 64 -> 64 at 56x56, 32 -> 192 at
            // 28x28), with 15 1.01, with 16-24 0.97-1.11 (64 -> 256 at 56x56, 64 -> 384 at 14x14).
            constexpr int64_t kNhwcSplitBPanels = 12;
            const int64_t whole_panels =
                std::min(a_count, (a_side.channels - a_first * Shape::kRows) / Shape::kRows);
            const int64_t a_first_line = a_first * Shape::kRows, whole_lines = whole_panels * Shape::kRows;
            const bool nhwc_split_pays = whole_panels == a_count || b_panels <= kNhwcSplitBPanels;
            const auto* a_channels = whole_panels > 0 && nhwc_split_pays
                                         ? in_place(a_side, group, a_first_line, whole_lines, a_pixels.data(), depth)
                                         : nullptr;
            const auto* a_rows = whole_panels > 0 && a_channels == nullptr
                                     ? rows_in_place(a_side, group, a_first_line, whole_lines, a_pixels.data(), depth)
                                     : nullptr;
            if (a_channels != nullptr || a_rows != nullptr) {
              multiply(a_channels != nullptr
                           ? Pack::strided(a_channels, whole_panels, Shape::kRows, a_side.index.pixel_stride)
                           : Pack::in_place(a_rows, whole_panels, Shape::kRows, a_side.index.channel_stride),
                       0);
              if (whole_panels < a_count) multiply(packed_a(whole_panels), whole_panels);
            } else {
              multiply(packed_a(0), 0);
            }
          }
        }
      });

  // Adds the chunks' partial sums in chunk order, whichever thread computed them: chunk by chunk
  // over a block of elements, so that the additions are vectors (each element's sum still adds the
  // chunks in order, the same bits). Element by element, chunks in the inner loop, the sum of 24
  // chunks made a 256 -> 64 NCHW layer at 56x56 take 1.12x the time (batch 4, an AVX2 EPYC).
  if (kSumInOutput && chunks == 1) return;
  constexpr int64_t kBlock = 1024;
  at::parallel_for(0, ceil_div(weight_size, kBlock), 1, [&](int64_t begin, int64_t end) {
    Acc sums[kBlock];
    for (int64_t block = begin; block < end; ++block) {
      const int64_t first = block * kBlock, count = std::min(kBlock, weight_size - first);
      std::copy_n(chunk_sums(0) + first, count, sums);
      for (int64_t c = 1; c < chunks; ++c) {
        const Acc* partial = chunk_sums(c) + first;
        for (int64_t i = 0; i < count; ++i) sums[i] += partial[i];
      }
      for (int64_t i = 0; i < count; ++i) grad_weight[first + i] = static_cast<T>(sums[i]);
    }
  });
}

}  // namespace

void forward(const ForwardArgs& args) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.input.scalar_type(),
                                  "pointwise_cpu_forward", [&] { forward_typed<scalar_t>(args); });
}

void backward_input(const BackwardInputArgs& args) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.grad_output.scalar_type(),
                                  "pointwise_cpu_backward_input",
                                  [&] { backward_input_typed<scalar_t>(args); });
}

void backward_weight(const BackwardWeightArgs& args) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.input.scalar_type(),
                                  "pointwise_cpu_backward_weight", [&] {
                                    dispatch_isa([&](auto isa) {
                                      using K = KernelSet<decltype(isa)::value, scalar_t>;
                                      backward_weight_typed<K, scalar_t>(args);
                                    });
                                  });
}

}  // namespace pointwise::cpu
