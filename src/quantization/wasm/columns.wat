;; GPTQ's column step (gptq-block.ts) in WebAssembly with 128-bit SIMD: the same IEEE operations in the same order
;; as the JavaScript it replaces (no fused multiply-add), so results are bit for bit the same.
;; Built into columns-wasm.ts by scripts/build-wasm.mjs (wabt); a test checks the two agree.
(module
  (memory (export "memory") 1)

  ;; One column of one row chunk: for n in [n0, n1), with w = W1[row + n] (float64):
  ;;   level = clamp(nearest_f32(f32(w / scale[n])) + zero[n], 0, maxq)   (float32 division result, ties to even)
  ;;   e = (w − (level − zero[n]) · scale[n]) / d
  ;;   q[n] = level; err[n] = e (float32 when err32, else float64); W1[row + n] = e; loss += e²
  ;; Pointers are byte offsets into memory: w (f64 row), err (f32 or f64 row), q (u8 row), scale (f32 row),
  ;; zero (u8 row), all already offset to element n0. Returns the updated loss.
  (func (export "quantize") (param $w i32) (param $err i32) (param $q i32) (param $scale i32) (param $zero i32)
        (param $count i32) (param $d f64) (param $maxq f64) (param $err32 i32) (param $loss f64) (result f64)
    (local $i i32) (local $x f64) (local $s f64) (local $z f64) (local $v f64) (local $e f64)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $x (f64.load (i32.add (local.get $w) (i32.shl (local.get $i) (i32.const 3)))))
        (local.set $s (f64.promote_f32 (f32.load (i32.add (local.get $scale) (i32.shl (local.get $i) (i32.const 2))))))
        (local.set $z (f64.convert_i32_u (i32.load8_u (i32.add (local.get $zero) (local.get $i)))))
        (local.set $v (f64.add
          (f64.promote_f32 (f32.nearest (f32.demote_f64 (f64.div (local.get $x) (local.get $s)))))
          (local.get $z)))
        (local.set $v (select (f64.const 0) (local.get $v) (f64.lt (local.get $v) (f64.const 0))))
        (local.set $v (select (local.get $maxq) (local.get $v) (f64.gt (local.get $v) (local.get $maxq))))
        (i32.store8 (i32.add (local.get $q) (local.get $i)) (i32.trunc_f64_u (local.get $v)))
        (local.set $e (f64.div
          (f64.sub (local.get $x) (f64.mul (f64.sub (local.get $v) (local.get $z)) (local.get $s)))
          (local.get $d)))
        (local.set $loss (f64.add (local.get $loss) (f64.mul (local.get $e) (local.get $e))))
        (if (local.get $err32)
          (then (f32.store (i32.add (local.get $err) (i32.shl (local.get $i) (i32.const 2))) (f32.demote_f64 (local.get $e))))
          (else (f64.store (i32.add (local.get $err) (i32.shl (local.get $i) (i32.const 3))) (local.get $e))))
        (f64.store (i32.add (local.get $w) (i32.shl (local.get $i) (i32.const 3))) (local.get $e))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $loss))

  ;; OBS update of later rows by one finished column: for r in [0, rows), n in [0, count):
  ;;   W[dst + r·stride + n] −= u[r] · e[n]
  ;; dst (f64), e (f64 row), u (f64, one per row) are byte offsets; stride is in elements. Two elements per SIMD op
  ;; (an odd last element alone); rows are independent, so their order does not change any value.
  (func (export "update") (param $dst i32) (param $e i32) (param $u i32) (param $rows i32) (param $count i32) (param $stride i32)
    (local $r i32) (local $n i32) (local $row i32) (local $uv v128) (local $us f64) (local $pairs i32) (local $p i32)
    (local.set $pairs (i32.and (local.get $count) (i32.const -2)))
    (block $rdone
      (loop $rnext
        (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $row (i32.add (local.get $dst) (i32.shl (i32.mul (local.get $r) (local.get $stride)) (i32.const 3))))
        (local.set $us (f64.load (i32.add (local.get $u) (i32.shl (local.get $r) (i32.const 3)))))
        (local.set $uv (f64x2.splat (local.get $us)))
        (local.set $n (i32.const 0))
        (block $ndone
          (loop $nnext
            (br_if $ndone (i32.ge_u (local.get $n) (local.get $pairs)))
            (local.set $p (i32.add (local.get $row) (i32.shl (local.get $n) (i32.const 3))))
            (v128.store (local.get $p)
              (f64x2.sub (v128.load (local.get $p))
                (f64x2.mul (local.get $uv) (v128.load (i32.add (local.get $e) (i32.shl (local.get $n) (i32.const 3)))))))
            (local.set $n (i32.add (local.get $n) (i32.const 2)))
            (br $nnext)))
        (if (i32.lt_u (local.get $pairs) (local.get $count))
          (then
            (local.set $p (i32.add (local.get $row) (i32.shl (local.get $pairs) (i32.const 3))))
            (f64.store (local.get $p)
              (f64.sub (f64.load (local.get $p))
                (f64.mul (local.get $us) (f64.load (i32.add (local.get $e) (i32.shl (local.get $pairs) (i32.const 3)))))))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rnext))))
)
