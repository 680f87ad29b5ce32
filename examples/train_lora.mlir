// One AdamW step of a rank-8 LoRA on the demo model's blk.0.ffn_up.weight
// (q4_K, 256 -> 512), which stays frozen: only A and B train.
//   y = x · Ŵᵀ + s · (x · Aᵀ) · Bᵀ,   s = α / r = 16 / 8 = 2,
//   L = Σ (y - t)² / (2·8),  gy = dL/dy = (y - t) / 8,
//   h = x · Aᵀ,  dB = s · gyᵀ · h,  dh = s · gy · B,  dA = dhᵀ · x,
//   dx = gy · Ŵ (qcc.qmatmul bwd, the fused backward through the blocks)
//        + dh · A,  returned so that a layer below could go on backward.
// AdamW (decoupled weight decay, PyTorch's formulation) updates A and B:
//   t ← t + 1,  m ← β₁m + (1-β₁)g,  v ← β₂v + (1-β₂)g²,
//   p ← p·(1 - lr·λ) - lr · (m / (1-β₁ᵗ)) / (√(v / (1-β₂ᵗ)) + ε),
// with β₁ = 0.9, β₂ = 0.999, ε = 1e-8; lr and λ (weight_decay) are inputs,
// m, v and t are state. A starts Kaiming-uniform and B at zero (qcc.init,
// drawn by the runtime from its seeded RNG), so the first forward pass is
// exactly the base model's. The weight has no result of its name: the
// runtime binds it zero-copy from the model and never updates it.
func.func @train_step(
    %w: !qcc.qtensor<512x256xq4_K> {qcc.name = "blk.0.ffn_up.weight"},
    %a: tensor<8x256xf32> {qcc.name = "blk.0.ffn_up.weight.lora_a",
                           qcc.role = "param", qcc.init = "kaiming_uniform",
                           qcc.lora.base = "blk.0.ffn_up.weight",
                           qcc.lora.part = "a", qcc.lora.alpha = 16.0 : f32},
    %b: tensor<512x8xf32> {qcc.name = "blk.0.ffn_up.weight.lora_b",
                           qcc.role = "param", qcc.init = "zeros",
                           qcc.lora.base = "blk.0.ffn_up.weight",
                           qcc.lora.part = "b", qcc.lora.alpha = 16.0 : f32},
    %ma: tensor<8x256xf32> {qcc.name = "lora_a.adam_m", qcc.role = "state"},
    %va: tensor<8x256xf32> {qcc.name = "lora_a.adam_v", qcc.role = "state"},
    %mb: tensor<512x8xf32> {qcc.name = "lora_b.adam_m", qcc.role = "state"},
    %vb: tensor<512x8xf32> {qcc.name = "lora_b.adam_v", qcc.role = "state"},
    %t: tensor<i32> {qcc.name = "adam.t", qcc.role = "state"},
    %x: tensor<8x256xf32> {qcc.name = "x"},
    %target: tensor<8x512xf32> {qcc.name = "target"},
    %lr: f32 {qcc.name = "lr"},
    %wd: f32 {qcc.name = "weight_decay"})
    -> (tensor<8x256xf32> {qcc.name = "blk.0.ffn_up.weight.lora_a"},
        tensor<512x8xf32> {qcc.name = "blk.0.ffn_up.weight.lora_b"},
        tensor<8x256xf32> {qcc.name = "lora_a.adam_m", qcc.role = "state"},
        tensor<8x256xf32> {qcc.name = "lora_a.adam_v", qcc.role = "state"},
        tensor<512x8xf32> {qcc.name = "lora_b.adam_m", qcc.role = "state"},
        tensor<512x8xf32> {qcc.name = "lora_b.adam_v", qcc.role = "state"},
        tensor<i32> {qcc.name = "adam.t", qcc.role = "state"},
        tensor<f32> {qcc.name = "loss"},
        tensor<8x256xf32> {qcc.name = "dx"}) {
  %zero = arith.constant 0.0 : f32
  %one = arith.constant 1.0 : f32
  %scale = arith.constant 2.0 : f32
  %inv_b = arith.constant 0.125 : f32
  %half_inv_b = arith.constant 0.0625 : f32
  %beta1 = arith.constant 0.9 : f32
  %beta2 = arith.constant 0.999 : f32
  %eps = arith.constant 1.0e-8 : f32

  // Forward: the frozen base through its blocks, plus the low-rank branch.
  %y0 = qcc.qmatmul fwd %x, %w : tensor<8x256xf32>, !qcc.qtensor<512x256xq4_K> -> tensor<8x512xf32>
  %er = tensor.empty() : tensor<8x8xf32>
  %r0 = linalg.fill ins(%zero : f32) outs(%er : tensor<8x8xf32>) -> tensor<8x8xf32>
  %h = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>,
                                      affine_map<(m, n, k) -> (n, k)>,
                                      affine_map<(m, n, k) -> (m, n)>]
      ins(%x, %a : tensor<8x256xf32>, tensor<8x256xf32>)
      outs(%r0 : tensor<8x8xf32>) -> tensor<8x8xf32>
  %ey = tensor.empty() : tensor<8x512xf32>
  %yl0 = linalg.fill ins(%zero : f32) outs(%ey : tensor<8x512xf32>) -> tensor<8x512xf32>
  %yl = linalg.matmul indexing_maps = [affine_map<(m, n, k) -> (m, k)>,
                                       affine_map<(m, n, k) -> (n, k)>,
                                       affine_map<(m, n, k) -> (m, n)>]
      ins(%h, %b : tensor<8x8xf32>, tensor<512x8xf32>)
      outs(%yl0 : tensor<8x512xf32>) -> tensor<8x512xf32>
  %y = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>,
                       affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%y0, %yl : tensor<8x512xf32>, tensor<8x512xf32>) outs(%ey : tensor<8x512xf32>) {
    ^bb0(%p: f32, %q: f32, %o: f32):
      %sq = arith.mulf %q, %scale : f32
      %s = arith.addf %p, %sq : f32
      linalg.yield %s : f32
  } -> tensor<8x512xf32>

  // Loss, gy = dL/dy and s·gy.
  %l0 = tensor.empty() : tensor<f32>
  %lacc = linalg.fill ins(%zero : f32) outs(%l0 : tensor<f32>) -> tensor<f32>
  %loss = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>,
                       affine_map<(i, j) -> ()>],
      iterator_types = ["reduction", "reduction"]}
      ins(%y, %target : tensor<8x512xf32>, tensor<8x512xf32>) outs(%lacc : tensor<f32>) {
    ^bb0(%p: f32, %q: f32, %acc: f32):
      %d = arith.subf %p, %q : f32
      %sq = arith.mulf %d, %d : f32
      %s = arith.mulf %sq, %half_inv_b : f32
      %r = arith.addf %acc, %s : f32
      linalg.yield %r : f32
  } -> tensor<f32>
  %eg1 = tensor.empty() : tensor<8x512xf32>
  %eg2 = tensor.empty() : tensor<8x512xf32>
  %gy, %gys = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>,
                       affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%y, %target : tensor<8x512xf32>, tensor<8x512xf32>)
      outs(%eg1, %eg2 : tensor<8x512xf32>, tensor<8x512xf32>) {
    ^bb0(%p: f32, %q: f32, %o1: f32, %o2: f32):
      %d = arith.subf %p, %q : f32
      %g = arith.mulf %d, %inv_b : f32
      %gs = arith.mulf %g, %scale : f32
      linalg.yield %g, %gs : f32, f32
  } -> (tensor<8x512xf32>, tensor<8x512xf32>)

  // dB = (s·gy)ᵀ · h: [512, 8].
  %edb = tensor.empty() : tensor<512x8xf32>
  %db0 = linalg.fill ins(%zero : f32) outs(%edb : tensor<512x8xf32>) -> tensor<512x8xf32>
  %db = linalg.matmul indexing_maps = [affine_map<(n, j, m) -> (m, n)>,
                                       affine_map<(n, j, m) -> (m, j)>,
                                       affine_map<(n, j, m) -> (n, j)>]
      ins(%gys, %h : tensor<8x512xf32>, tensor<8x8xf32>)
      outs(%db0 : tensor<512x8xf32>) -> tensor<512x8xf32>
  // dh = (s·gy) · B: [8, 8].
  %edh = tensor.empty() : tensor<8x8xf32>
  %dh0 = linalg.fill ins(%zero : f32) outs(%edh : tensor<8x8xf32>) -> tensor<8x8xf32>
  %dh = linalg.matmul indexing_maps = [affine_map<(m, j, n) -> (m, n)>,
                                       affine_map<(m, j, n) -> (n, j)>,
                                       affine_map<(m, j, n) -> (m, j)>]
      ins(%gys, %b : tensor<8x512xf32>, tensor<512x8xf32>)
      outs(%dh0 : tensor<8x8xf32>) -> tensor<8x8xf32>
  // dA = dhᵀ · x: [8, 256].
  %eda = tensor.empty() : tensor<8x256xf32>
  %da0 = linalg.fill ins(%zero : f32) outs(%eda : tensor<8x256xf32>) -> tensor<8x256xf32>
  %da = linalg.matmul indexing_maps = [affine_map<(j, k, m) -> (m, j)>,
                                       affine_map<(j, k, m) -> (m, k)>,
                                       affine_map<(j, k, m) -> (j, k)>]
      ins(%dh, %x : tensor<8x8xf32>, tensor<8x256xf32>)
      outs(%da0 : tensor<8x256xf32>) -> tensor<8x256xf32>
  // dx = gy · Ŵ through the blocks, plus dh · A accumulated onto it.
  %dxw = qcc.qmatmul bwd %gy, %w : tensor<8x512xf32>, !qcc.qtensor<512x256xq4_K> -> tensor<8x256xf32>
  %dx = linalg.matmul indexing_maps = [affine_map<(m, k, j) -> (m, j)>,
                                       affine_map<(m, k, j) -> (j, k)>,
                                       affine_map<(m, k, j) -> (m, k)>]
      ins(%dh, %a : tensor<8x8xf32>, tensor<8x256xf32>)
      outs(%dxw : tensor<8x256xf32>) -> tensor<8x256xf32>

  // AdamW: the step count, bias corrections and decay factor.
  %t0 = tensor.extract %t[] : tensor<i32>
  %c1 = arith.constant 1 : i32
  %t1 = arith.addi %t0, %c1 : i32
  %t2 = tensor.from_elements %t1 : tensor<i32>
  %tf = arith.sitofp %t1 : i32 to f32
  %p1 = math.powf %beta1, %tf : f32
  %p2 = math.powf %beta2, %tf : f32
  %bc1 = arith.subf %one, %p1 : f32
  %bc2 = arith.subf %one, %p2 : f32
  %omb1 = arith.subf %one, %beta1 : f32
  %omb2 = arith.subf %one, %beta2 : f32
  %lrwd = arith.mulf %lr, %wd : f32
  %decay = arith.subf %one, %lrwd : f32

  %ea1 = tensor.empty() : tensor<8x256xf32>
  %ea2 = tensor.empty() : tensor<8x256xf32>
  %ea3 = tensor.empty() : tensor<8x256xf32>
  %a2, %ma2, %va2 = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>,
                       affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>,
                       affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>,
                       affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%a, %da, %ma, %va : tensor<8x256xf32>, tensor<8x256xf32>, tensor<8x256xf32>, tensor<8x256xf32>)
      outs(%ea1, %ea2, %ea3 : tensor<8x256xf32>, tensor<8x256xf32>, tensor<8x256xf32>) {
    ^bb0(%p: f32, %g: f32, %m: f32, %v: f32, %o1: f32, %o2: f32, %o3: f32):
      %m1 = arith.mulf %beta1, %m : f32
      %m2 = arith.mulf %omb1, %g : f32
      %mn = arith.addf %m1, %m2 : f32
      %gg = arith.mulf %g, %g : f32
      %v1 = arith.mulf %beta2, %v : f32
      %v2 = arith.mulf %omb2, %gg : f32
      %vn = arith.addf %v1, %v2 : f32
      %mh = arith.divf %mn, %bc1 : f32
      %vh = arith.divf %vn, %bc2 : f32
      %sv = math.sqrt %vh : f32
      %den = arith.addf %sv, %eps : f32
      %u = arith.divf %mh, %den : f32
      %lu = arith.mulf %lr, %u : f32
      %pd = arith.mulf %p, %decay : f32
      %pn = arith.subf %pd, %lu : f32
      linalg.yield %pn, %mn, %vn : f32, f32, f32
  } -> (tensor<8x256xf32>, tensor<8x256xf32>, tensor<8x256xf32>)

  %eb1 = tensor.empty() : tensor<512x8xf32>
  %eb2 = tensor.empty() : tensor<512x8xf32>
  %eb3 = tensor.empty() : tensor<512x8xf32>
  %b2, %mb2, %vb2 = linalg.generic {
      indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>,
                       affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>,
                       affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>,
                       affine_map<(i, j) -> (i, j)>],
      iterator_types = ["parallel", "parallel"]}
      ins(%b, %db, %mb, %vb : tensor<512x8xf32>, tensor<512x8xf32>, tensor<512x8xf32>, tensor<512x8xf32>)
      outs(%eb1, %eb2, %eb3 : tensor<512x8xf32>, tensor<512x8xf32>, tensor<512x8xf32>) {
    ^bb0(%p: f32, %g: f32, %m: f32, %v: f32, %o1: f32, %o2: f32, %o3: f32):
      %m1 = arith.mulf %beta1, %m : f32
      %m2 = arith.mulf %omb1, %g : f32
      %mn = arith.addf %m1, %m2 : f32
      %gg = arith.mulf %g, %g : f32
      %v1 = arith.mulf %beta2, %v : f32
      %v2 = arith.mulf %omb2, %gg : f32
      %vn = arith.addf %v1, %v2 : f32
      %mh = arith.divf %mn, %bc1 : f32
      %vh = arith.divf %vn, %bc2 : f32
      %sv = math.sqrt %vh : f32
      %den = arith.addf %sv, %eps : f32
      %u = arith.divf %mh, %den : f32
      %lu = arith.mulf %lr, %u : f32
      %pd = arith.mulf %p, %decay : f32
      %pn = arith.subf %pd, %lu : f32
      linalg.yield %pn, %mn, %vn : f32, f32, f32
  } -> (tensor<512x8xf32>, tensor<512x8xf32>, tensor<512x8xf32>)

  return %a2, %b2, %ma2, %va2, %mb2, %vb2, %t2, %loss, %dx
      : tensor<8x256xf32>, tensor<512x8xf32>, tensor<8x256xf32>, tensor<8x256xf32>,
        tensor<512x8xf32>, tensor<512x8xf32>, tensor<i32>, tensor<f32>, tensor<8x256xf32>
}
