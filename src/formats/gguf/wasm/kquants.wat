;; The K-quant scale searches of llama.cpp's reference quantizer (make_qkx2_quants for Q4_K/Q5_K, make_qx_quants
;; for Q6_K) in WebAssembly. Every step is the float32 operation the JavaScript version in quants.ts rounds to
;; (Math.fround of an operation on float32 values is the float32 operation; wasm never fuses a multiply-add), and
;; NaN/−0 follow the JavaScript (a level stored in a Uint8Array is 0 for NaN and −0) — so the two are bit-identical
;; (tested). It exists for speed: the searches are ~20 trial roundings per value.
;;
;; Memory (one page): a block's float32 values at X (256), the results at OUT (8 × [scale, min] for k45, 16 scales
;; for q6k). Both take four sub-blocks at a time in SIMD lanes (each lane the scalar search of one sub-block, step
;; for step): their values, weights and levels transposed ([value i][lane]) at XT, WT, LT.
(module
  (memory (export "memory") 1)
  (global $X i32 (i32.const 0))
  (global $OUT i32 (i32.const 1280))
  (global $XT i32 (i32.const 2048))
  (global $WT i32 (i32.const 2560))
  (global $LT i32 (i32.const 3072))
  (global $sumlx4 (mut v128) (v128.const i32x4 0 0 0 0))
  (global $suml24 (mut v128) (v128.const i32x4 0 0 0 0))

  ;; JavaScript clamp(nearestInt(v), lo, hi) in four lanes: round half to even, then v < lo ? lo : v > hi ? hi : v
  ;; (NaN stays NaN).
  (func $level4 (param $v v128) (param $lo v128) (param $hi v128) (result v128)
    (local $r v128)
    (local.set $r (f32x4.nearest (local.get $v)))
    (v128.bitselect (local.get $lo)
      (v128.bitselect (local.get $hi) (local.get $r) (f32x4.gt (local.get $r) (local.get $hi)))
      (f32x4.lt (local.get $r) (local.get $lo))))

  ;; make_qkx2_quants (use_mad false) of the four sub-blocks at XT / WT (32 values each, one per lane):
  ;; [scale, −min] of lane j at out + 8j.
  (func $qkx2x4 (param $nmax f32) (param $rmin f32) (param $rdelta f64) (param $nstep i32) (param $out i32)
    (local $i i32) (local $is i32) (local $p i32) (local $j i32)
    (local $min v128) (local $min0 v128) (local $max v128) (local $sumW v128) (local $sumX v128) (local $range v128)
    (local $iscale v128) (local $scale v128) (local $best v128) (local $sumL v128) (local $sumL2 v128) (local $sumXL v128)
    (local $D v128) (local $ts v128) (local $tm v128) (local $err v128) (local $l v128) (local $wl v128) (local $diff v128)
    (local $xi v128) (local $wi v128) (local $same v128) (local $better v128) (local $pos v128) (local $zero v128) (local $top v128)
    (local.set $zero (f32x4.splat (f32.const 0)))
    (local.set $top (f32x4.splat (local.get $nmax)))
    (local.set $min (v128.load (global.get $XT)))
    (local.set $max (local.get $min))
    (local.set $sumW (v128.load (global.get $WT)))
    (local.set $sumX (f32x4.mul (local.get $sumW) (local.get $min)))
    (local.set $i (i32.const 1))
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $i) (i32.const 32)))
        (local.set $p (i32.shl (local.get $i) (i32.const 4)))
        (local.set $xi (v128.load (i32.add (global.get $XT) (local.get $p))))
        (local.set $wi (v128.load (i32.add (global.get $WT) (local.get $p))))
        (local.set $min (v128.bitselect (local.get $xi) (local.get $min) (f32x4.lt (local.get $xi) (local.get $min))))
        (local.set $max (v128.bitselect (local.get $xi) (local.get $max) (f32x4.gt (local.get $xi) (local.get $max))))
        (local.set $sumW (f32x4.add (local.get $sumW) (local.get $wi)))
        (local.set $sumX (f32x4.add (local.get $sumX) (f32x4.mul (local.get $wi) (local.get $xi))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (local.set $min (v128.bitselect (local.get $zero) (local.get $min) (f32x4.gt (local.get $min) (local.get $zero))))
    ;; Lanes with max == min return (0, −min) at once in the scalar search: their results are restored at the end.
    (local.set $min0 (local.get $min))
    (local.set $same (f32x4.eq (local.get $max) (local.get $min)))
    (local.set $range (f32x4.sub (local.get $max) (local.get $min)))
    (local.set $iscale (f32x4.div (local.get $top) (local.get $range)))
    (local.set $scale (f32x4.div (f32x4.splat (f32.const 1)) (local.get $iscale)))
    (local.set $best (local.get $zero))
    (local.set $i (i32.const 0))
    (block $done
      (loop $first
        (br_if $done (i32.ge_u (local.get $i) (i32.const 32)))
        (local.set $p (i32.shl (local.get $i) (i32.const 4)))
        (local.set $xi (v128.load (i32.add (global.get $XT) (local.get $p))))
        (local.set $wi (v128.load (i32.add (global.get $WT) (local.get $p))))
        (local.set $l (call $level4 (f32x4.mul (local.get $iscale) (f32x4.sub (local.get $xi) (local.get $min))) (local.get $zero) (local.get $top)))
        (local.set $diff (f32x4.sub (f32x4.add (f32x4.mul (local.get $scale) (local.get $l)) (local.get $min)) (local.get $xi)))
        (local.set $best (f32x4.add (local.get $best) (f32x4.mul (local.get $wi) (f32x4.mul (local.get $diff) (local.get $diff)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $first)))
    (local.set $is (i32.const 0))
    (block $steps
      (loop $step
        (br_if $steps (i32.gt_s (local.get $is) (local.get $nstep)))
        (local.set $iscale
          (f32x4.div
            (f32x4.splat
              (f32.add
                (f32.add (local.get $rmin) (f32.demote_f64 (f64.mul (local.get $rdelta) (f64.convert_i32_s (local.get $is)))))
                (local.get $nmax)))
            (local.get $range)))
        (local.set $sumL (local.get $zero))
        (local.set $sumL2 (local.get $zero))
        (local.set $sumXL (local.get $zero))
        (local.set $i (i32.const 0))
        (block $done
          (loop $sums
            (br_if $done (i32.ge_u (local.get $i) (i32.const 32)))
            (local.set $p (i32.shl (local.get $i) (i32.const 4)))
            (local.set $xi (v128.load (i32.add (global.get $XT) (local.get $p))))
            (local.set $wi (v128.load (i32.add (global.get $WT) (local.get $p))))
            (local.set $l (call $level4 (f32x4.mul (local.get $iscale) (f32x4.sub (local.get $xi) (local.get $min))) (local.get $zero) (local.get $top)))
            (v128.store (i32.add (global.get $LT) (local.get $p))
              (v128.bitselect (local.get $zero) (f32x4.add (local.get $l) (local.get $zero)) (f32x4.ne (local.get $l) (local.get $l))))
            (local.set $wl (f32x4.mul (local.get $wi) (local.get $l)))
            (local.set $sumL (f32x4.add (local.get $sumL) (local.get $wl)))
            (local.set $sumL2 (f32x4.add (local.get $sumL2) (f32x4.mul (local.get $wl) (local.get $l))))
            (local.set $sumXL (f32x4.add (local.get $sumXL) (f32x4.mul (local.get $wl) (local.get $xi))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $sums)))
        (local.set $D (f32x4.sub (f32x4.mul (local.get $sumW) (local.get $sumL2)) (f32x4.mul (local.get $sumL) (local.get $sumL))))
        (local.set $ts (f32x4.div (f32x4.sub (f32x4.mul (local.get $sumW) (local.get $sumXL)) (f32x4.mul (local.get $sumX) (local.get $sumL))) (local.get $D)))
        (local.set $tm (f32x4.div (f32x4.sub (f32x4.mul (local.get $sumL2) (local.get $sumX)) (f32x4.mul (local.get $sumL) (local.get $sumXL))) (local.get $D)))
        (local.set $pos (f32x4.gt (local.get $tm) (local.get $zero)))
        (local.set $tm (v128.bitselect (local.get $zero) (local.get $tm) (local.get $pos)))
        (local.set $ts (v128.bitselect (f32x4.div (local.get $sumXL) (local.get $sumL2)) (local.get $ts) (local.get $pos)))
        (local.set $err (local.get $zero))
        (local.set $i (i32.const 0))
        (block $done
          (loop $errs
            (br_if $done (i32.ge_u (local.get $i) (i32.const 32)))
            (local.set $p (i32.shl (local.get $i) (i32.const 4)))
            (local.set $diff
              (f32x4.sub
                (f32x4.add (f32x4.mul (local.get $ts) (v128.load (i32.add (global.get $LT) (local.get $p)))) (local.get $tm))
                (v128.load (i32.add (global.get $XT) (local.get $p)))))
            (local.set $err
              (f32x4.add (local.get $err) (f32x4.mul (v128.load (i32.add (global.get $WT) (local.get $p))) (f32x4.mul (local.get $diff) (local.get $diff)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $errs)))
        ;; The scalar search takes a trial only when D > 0 and its error is lower.
        (local.set $better (v128.and (f32x4.gt (local.get $D) (local.get $zero)) (f32x4.lt (local.get $err) (local.get $best))))
        (local.set $best (v128.bitselect (local.get $err) (local.get $best) (local.get $better)))
        (local.set $scale (v128.bitselect (local.get $ts) (local.get $scale) (local.get $better)))
        (local.set $min (v128.bitselect (local.get $tm) (local.get $min) (local.get $better)))
        (local.set $is (i32.add (local.get $is) (i32.const 1)))
        (br $step)))
    (local.set $scale (v128.bitselect (local.get $zero) (local.get $scale) (local.get $same)))
    (local.set $min (f32x4.neg (v128.bitselect (local.get $min0) (local.get $min) (local.get $same))))
    (f32.store (local.get $out) (f32x4.extract_lane 0 (local.get $scale)))
    (f32.store offset=4 (local.get $out) (f32x4.extract_lane 0 (local.get $min)))
    (f32.store offset=8 (local.get $out) (f32x4.extract_lane 1 (local.get $scale)))
    (f32.store offset=12 (local.get $out) (f32x4.extract_lane 1 (local.get $min)))
    (f32.store offset=16 (local.get $out) (f32x4.extract_lane 2 (local.get $scale)))
    (f32.store offset=20 (local.get $out) (f32x4.extract_lane 2 (local.get $min)))
    (f32.store offset=24 (local.get $out) (f32x4.extract_lane 3 (local.get $scale)))
    (f32.store offset=28 (local.get $out) (f32x4.extract_lane 3 (local.get $min))))

  ;; Q4_K (q5 = 0) / Q5_K (q5 = 1) sub-block fits of the 256 values at X: [scale, min] of sub-block j at OUT + 8j.
  ;; Sub-blocks 4g … 4g + 3 go through $qkx2x4 together, their values transposed into lanes.
  (func (export "k45") (param $q5 i32)
    (local $g i32) (local $lane i32) (local $i i32) (local $src i32) (local $dst i32) (local $sumX2 v128) (local $avX v128) (local $v v128)
    (block $groups
      (loop $group
        (br_if $groups (i32.ge_u (local.get $g) (i32.const 2)))
        (local.set $lane (i32.const 0))
        (block $d0
          (loop $lanes
            (br_if $d0 (i32.ge_u (local.get $lane) (i32.const 4)))
            ;; sub-block 4g + lane starts at X + 128 (4g + lane)
            (local.set $src (i32.add (global.get $X) (i32.shl (i32.add (i32.shl (local.get $g) (i32.const 2)) (local.get $lane)) (i32.const 7))))
            (local.set $dst (i32.add (global.get $XT) (i32.shl (local.get $lane) (i32.const 2))))
            (local.set $i (i32.const 0))
            (block $d1
              (loop $copy
                (br_if $d1 (i32.ge_u (local.get $i) (i32.const 32)))
                (f32.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 4)))
                  (f32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $copy)))
            (local.set $lane (i32.add (local.get $lane) (i32.const 1)))
            (br $lanes)))
        (local.set $sumX2 (f32x4.splat (f32.const 0)))
        (local.set $i (i32.const 0))
        (block $d2
          (loop $sq
            (br_if $d2 (i32.ge_u (local.get $i) (i32.const 32)))
            (local.set $v (v128.load (i32.add (global.get $XT) (i32.shl (local.get $i) (i32.const 4)))))
            (local.set $sumX2 (f32x4.add (local.get $sumX2) (f32x4.mul (local.get $v) (local.get $v))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $sq)))
        (local.set $avX (f32x4.sqrt (f32x4.div (local.get $sumX2) (f32x4.splat (f32.const 32)))))
        (local.set $i (i32.const 0))
        (block $d3
          (loop $wt
            (br_if $d3 (i32.ge_u (local.get $i) (i32.const 32)))
            (v128.store (i32.add (global.get $WT) (i32.shl (local.get $i) (i32.const 4)))
              (f32x4.add (local.get $avX) (f32x4.abs (v128.load (i32.add (global.get $XT) (i32.shl (local.get $i) (i32.const 4)))))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $wt)))
        (if (local.get $q5)
          (then (call $qkx2x4 (f32.const 31) (f32.const -0.5) (f64.const 0.1) (i32.const 15) (i32.add (global.get $OUT) (i32.shl (local.get $g) (i32.const 5)))))
          (else (call $qkx2x4 (f32.const 15) (f32.const -1) (f64.const 0.1) (i32.const 20) (i32.add (global.get $OUT) (i32.shl (local.get $g) (i32.const 5))))))
        (local.set $g (i32.add (local.get $g) (i32.const 1)))
        (br $group))))

  ;; make_qx_quants' sums for one trial iscale of each lane, over the 16 values at XT (levels in [−nmax, nmax − 1]).
  (func $qxSums4 (param $iscale v128) (param $lo v128) (param $hi v128)
    (local $i i32) (local $v v128) (local $l v128) (local $w v128)
    (global.set $sumlx4 (f32x4.splat (f32.const 0)))
    (global.set $suml24 (f32x4.splat (f32.const 0)))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (i32.const 16)))
        (local.set $v (v128.load (i32.add (global.get $XT) (i32.shl (local.get $i) (i32.const 4)))))
        (local.set $l (call $level4 (f32x4.mul (local.get $iscale) (local.get $v)) (local.get $lo) (local.get $hi)))
        (local.set $w (f32x4.mul (local.get $v) (local.get $v)))
        (global.set $sumlx4 (f32x4.add (global.get $sumlx4) (f32x4.mul (f32x4.mul (local.get $w) (local.get $v)) (local.get $l))))
        (global.set $suml24 (f32x4.add (global.get $suml24) (f32x4.mul (f32x4.mul (local.get $w) (local.get $l)) (local.get $l))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each))))

  ;; make_qx_quants (rmse_type 1, no importance weights, nmax 32) of the four 16-value sub-blocks at XT, one per
  ;; lane: their scales.
  (func $qx4 (result v128)
    (local $i i32) (local $is i32) (local $v v128) (local $max v128) (local $amax v128) (local $gt v128)
    (local $scale v128) (local $best v128) (local $ns v128) (local $upd v128) (local $nmax f32) (local $lo v128) (local $hi v128)
    (local.set $nmax (f32.const 32))
    (local.set $lo (f32x4.splat (f32.const -32)))
    (local.set $hi (f32x4.splat (f32.const 31)))
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $i) (i32.const 16)))
        (local.set $v (v128.load (i32.add (global.get $XT) (i32.shl (local.get $i) (i32.const 4)))))
        (local.set $gt (f32x4.gt (f32x4.abs (local.get $v)) (local.get $amax)))
        (local.set $amax (v128.bitselect (f32x4.abs (local.get $v)) (local.get $amax) (local.get $gt)))
        (local.set $max (v128.bitselect (local.get $v) (local.get $max) (local.get $gt)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (call $qxSums4 (f32x4.div (f32x4.splat (f32.neg (local.get $nmax))) (local.get $max)) (local.get $lo) (local.get $hi))
    ;; JavaScript `suml2 ? … : 0`: 0 and NaN are false.
    (local.set $scale
      (v128.and
        (f32x4.div (global.get $sumlx4) (global.get $suml24))
        (v128.and (f32x4.ne (global.get $suml24) (f32x4.splat (f32.const 0))) (f32x4.eq (global.get $suml24) (global.get $suml24)))))
    (local.set $best (f32x4.mul (local.get $scale) (global.get $sumlx4)))
    (local.set $is (i32.const -9))
    (block $steps
      (loop $step
        (br_if $steps (i32.gt_s (local.get $is) (i32.const 9)))
        (if (local.get $is)
          (then
            (call $qxSums4
              (f32x4.div
                (f32x4.splat (f32.neg (f32.add (local.get $nmax) (f32.demote_f64 (f64.mul (f64.const 0.1) (f64.convert_i32_s (local.get $is)))))))
                (local.get $max))
              (local.get $lo) (local.get $hi))
            (local.set $upd
              (v128.and
                (f32x4.gt (global.get $suml24) (f32x4.splat (f32.const 0)))
                (f32x4.gt (f32x4.mul (global.get $sumlx4) (global.get $sumlx4)) (f32x4.mul (local.get $best) (global.get $suml24)))))
            (local.set $ns (f32x4.div (global.get $sumlx4) (global.get $suml24)))
            (local.set $best (v128.bitselect (f32x4.mul (local.get $ns) (global.get $sumlx4)) (local.get $best) (local.get $upd)))
            (local.set $scale (v128.bitselect (local.get $ns) (local.get $scale) (local.get $upd)))))
        (local.set $is (i32.add (local.get $is) (i32.const 1)))
        (br $step)))
    ;; amax < 1e-15 (compared in float64 by the JavaScript; 1e-15 rounds up to the smallest float32 above it, so
    ;; the float32 comparison is the same): the scale is 0.
    (v128.andnot (local.get $scale) (f32x4.lt (local.get $amax) (f32x4.splat (f32.const 1e-15)))))

  ;; Q6_K sub-block scales of the 256 values at X: scale of sub-block j (16 values) at OUT + 4j; sub-blocks 4g … 4g + 3
  ;; go through $qx4 together, their values transposed into lanes.
  (func (export "q6k")
    (local $g i32) (local $lane i32) (local $i i32) (local $src i32) (local $dst i32)
    (block $groups
      (loop $group
        (br_if $groups (i32.ge_u (local.get $g) (i32.const 4)))
        (local.set $lane (i32.const 0))
        (block $d0
          (loop $lanes
            (br_if $d0 (i32.ge_u (local.get $lane) (i32.const 4)))
            (local.set $src (i32.add (global.get $X) (i32.shl (i32.add (i32.shl (local.get $g) (i32.const 2)) (local.get $lane)) (i32.const 6))))
            (local.set $dst (i32.add (global.get $XT) (i32.shl (local.get $lane) (i32.const 2))))
            (local.set $i (i32.const 0))
            (block $d1
              (loop $copy
                (br_if $d1 (i32.ge_u (local.get $i) (i32.const 16)))
                (f32.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 4)))
                  (f32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $copy)))
            (local.set $lane (i32.add (local.get $lane) (i32.const 1)))
            (br $lanes)))
        (v128.store (i32.add (global.get $OUT) (i32.shl (local.get $g) (i32.const 4))) (call $qx4))
        (local.set $g (i32.add (local.get $g) (i32.const 1)))
        (br $group))))
)
