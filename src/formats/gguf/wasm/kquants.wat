;; The K-quant scale searches of llama.cpp's reference quantizer (make_qkx2_quants for Q4_K/Q5_K, make_qx_quants
;; for Q6_K) in WebAssembly. Every step is the float32 operation the JavaScript version in quants.ts rounds to
;; (Math.fround of an operation on float32 values is the float32 operation; wasm never fuses a multiply-add), and
;; NaN/−0 follow the JavaScript (a level stored in a Uint8Array is 0 for NaN and −0) — so the two are bit-identical
;; (tested). It exists for speed: the searches are ~20 trial roundings per value.
;;
;; Memory (one page): a block's float32 values at X (up to 256), the sub-block's weights at W (32), its levels at L
;; (32, float32), the results at OUT (8 × [scale, min] for k45, 16 scales for q6k).
(module
  (memory (export "memory") 1)
  (global $X i32 (i32.const 0))
  (global $W i32 (i32.const 1024))
  (global $L i32 (i32.const 1152))
  (global $OUT i32 (i32.const 1280))
  (global $sumlx (mut f32) (f32.const 0))
  (global $suml2 (mut f32) (f32.const 0))

  ;; JavaScript clamp(nearestInt(v), lo, hi): round half to even, then v < lo ? lo : v > hi ? hi : v (NaN stays NaN).
  (func $level (param $v f32) (param $lo f32) (param $hi f32) (result f32)
    (local $r f32)
    (local.set $r (f32.nearest (local.get $v)))
    (if (result f32) (f32.lt (local.get $r) (local.get $lo))
      (then (local.get $lo))
      (else (select (local.get $hi) (local.get $r) (f32.gt (local.get $r) (local.get $hi))))))

  ;; make_qkx2_quants (use_mad false) of n values at x with weights at w: [scale, −min] float32 at out.
  (func $qkx2 (param $x i32) (param $w i32) (param $n i32) (param $nmax f32) (param $rmin f32) (param $rdelta f64)
              (param $nstep i32) (param $out i32)
    (local $i i32) (local $is i32) (local $p i32)
    (local $min f32) (local $max f32) (local $sumW f32) (local $sumX f32) (local $range f32) (local $iscale f32)
    (local $scale f32) (local $best f32) (local $sumL f32) (local $sumL2 f32) (local $sumXL f32) (local $D f32)
    (local $ts f32) (local $tm f32) (local $err f32) (local $l f32) (local $wl f32) (local $diff f32)
    (local $xi f32) (local $wi f32)
    (local.set $min (f32.load (local.get $x)))
    (local.set $max (local.get $min))
    (local.set $sumW (f32.load (local.get $w)))
    (local.set $sumX (f32.mul (local.get $sumW) (local.get $min)))
    (local.set $i (i32.const 1))
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $p (i32.shl (local.get $i) (i32.const 2)))
        (local.set $xi (f32.load (i32.add (local.get $x) (local.get $p))))
        (local.set $wi (f32.load (i32.add (local.get $w) (local.get $p))))
        (if (f32.lt (local.get $xi) (local.get $min)) (then (local.set $min (local.get $xi))))
        (if (f32.gt (local.get $xi) (local.get $max)) (then (local.set $max (local.get $xi))))
        (local.set $sumW (f32.add (local.get $sumW) (local.get $wi)))
        (local.set $sumX (f32.add (local.get $sumX) (f32.mul (local.get $wi) (local.get $xi))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (if (f32.gt (local.get $min) (f32.const 0)) (then (local.set $min (f32.const 0))))
    (if (f32.eq (local.get $max) (local.get $min))
      (then
        (f32.store (local.get $out) (f32.const 0))
        (f32.store offset=4 (local.get $out) (f32.neg (local.get $min)))
        (return)))
    (local.set $range (f32.sub (local.get $max) (local.get $min)))
    (local.set $iscale (f32.div (local.get $nmax) (local.get $range)))
    (local.set $scale (f32.div (f32.const 1) (local.get $iscale)))
    (local.set $best (f32.const 0))
    (local.set $i (i32.const 0))
    (block $done
      (loop $first
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $p (i32.shl (local.get $i) (i32.const 2)))
        (local.set $xi (f32.load (i32.add (local.get $x) (local.get $p))))
        (local.set $wi (f32.load (i32.add (local.get $w) (local.get $p))))
        (local.set $l (call $level (f32.mul (local.get $iscale) (f32.sub (local.get $xi) (local.get $min))) (f32.const 0) (local.get $nmax)))
        (local.set $diff (f32.sub (f32.add (f32.mul (local.get $scale) (local.get $l)) (local.get $min)) (local.get $xi)))
        (local.set $best (f32.add (local.get $best) (f32.mul (local.get $wi) (f32.mul (local.get $diff) (local.get $diff)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $first)))
    (local.set $is (i32.const 0))
    (block $steps
      (loop $step
        (br_if $steps (i32.gt_s (local.get $is) (local.get $nstep)))
        (local.set $iscale
          (f32.div
            (f32.add
              (f32.add (local.get $rmin) (f32.demote_f64 (f64.mul (local.get $rdelta) (f64.convert_i32_s (local.get $is)))))
              (local.get $nmax))
            (local.get $range)))
        (local.set $sumL (f32.const 0))
        (local.set $sumL2 (f32.const 0))
        (local.set $sumXL (f32.const 0))
        (local.set $i (i32.const 0))
        (block $done
          (loop $sums
            (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $p (i32.shl (local.get $i) (i32.const 2)))
            (local.set $xi (f32.load (i32.add (local.get $x) (local.get $p))))
            (local.set $wi (f32.load (i32.add (local.get $w) (local.get $p))))
            (local.set $l (call $level (f32.mul (local.get $iscale) (f32.sub (local.get $xi) (local.get $min))) (f32.const 0) (local.get $nmax)))
            ;; laux[i] = l in a Uint8Array: NaN and −0 become 0.
            (f32.store (i32.add (global.get $L) (local.get $p))
              (select (f32.const 0) (f32.add (local.get $l) (f32.const 0)) (f32.ne (local.get $l) (local.get $l))))
            (local.set $wl (f32.mul (local.get $wi) (local.get $l)))
            (local.set $sumL (f32.add (local.get $sumL) (local.get $wl)))
            (local.set $sumL2 (f32.add (local.get $sumL2) (f32.mul (local.get $wl) (local.get $l))))
            (local.set $sumXL (f32.add (local.get $sumXL) (f32.mul (local.get $wl) (local.get $xi))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $sums)))
        (local.set $D (f32.sub (f32.mul (local.get $sumW) (local.get $sumL2)) (f32.mul (local.get $sumL) (local.get $sumL))))
        (if (f32.gt (local.get $D) (f32.const 0))
          (then
            (local.set $ts (f32.div (f32.sub (f32.mul (local.get $sumW) (local.get $sumXL)) (f32.mul (local.get $sumX) (local.get $sumL))) (local.get $D)))
            (local.set $tm (f32.div (f32.sub (f32.mul (local.get $sumL2) (local.get $sumX)) (f32.mul (local.get $sumL) (local.get $sumXL))) (local.get $D)))
            (if (f32.gt (local.get $tm) (f32.const 0))
              (then
                (local.set $tm (f32.const 0))
                (local.set $ts (f32.div (local.get $sumXL) (local.get $sumL2)))))
            (local.set $err (f32.const 0))
            (local.set $i (i32.const 0))
            (block $done
              (loop $errs
                (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
                (local.set $p (i32.shl (local.get $i) (i32.const 2)))
                (local.set $diff
                  (f32.sub
                    (f32.add (f32.mul (local.get $ts) (f32.load (i32.add (global.get $L) (local.get $p)))) (local.get $tm))
                    (f32.load (i32.add (local.get $x) (local.get $p)))))
                (local.set $err
                  (f32.add (local.get $err) (f32.mul (f32.load (i32.add (local.get $w) (local.get $p))) (f32.mul (local.get $diff) (local.get $diff)))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $errs)))
            (if (f32.lt (local.get $err) (local.get $best))
              (then
                (local.set $best (local.get $err))
                (local.set $scale (local.get $ts))
                (local.set $min (local.get $tm))))))
        (local.set $is (i32.add (local.get $is) (i32.const 1)))
        (br $step)))
    (f32.store (local.get $out) (local.get $scale))
    (f32.store offset=4 (local.get $out) (f32.neg (local.get $min))))

  ;; Q4_K (q5 = 0) / Q5_K (q5 = 1) sub-block fits of the 256 values at X: [scale, min] of sub-block j at OUT + 8j.
  (func (export "k45") (param $q5 i32)
    (local $j i32) (local $l i32) (local $xs i32) (local $sumX2 f32) (local $avX f32) (local $v f32)
    (block $done
      (loop $sub
        (br_if $done (i32.ge_u (local.get $j) (i32.const 8)))
        (local.set $xs (i32.add (global.get $X) (i32.shl (local.get $j) (i32.const 7))))
        (local.set $sumX2 (f32.const 0))
        (local.set $l (i32.const 0))
        (block $d1
          (loop $sq
            (br_if $d1 (i32.ge_u (local.get $l) (i32.const 32)))
            (local.set $v (f32.load (i32.add (local.get $xs) (i32.shl (local.get $l) (i32.const 2)))))
            (local.set $sumX2 (f32.add (local.get $sumX2) (f32.mul (local.get $v) (local.get $v))))
            (local.set $l (i32.add (local.get $l) (i32.const 1)))
            (br $sq)))
        (local.set $avX (f32.sqrt (f32.div (local.get $sumX2) (f32.const 32))))
        (local.set $l (i32.const 0))
        (block $d2
          (loop $wt
            (br_if $d2 (i32.ge_u (local.get $l) (i32.const 32)))
            (f32.store (i32.add (global.get $W) (i32.shl (local.get $l) (i32.const 2)))
              (f32.add (local.get $avX) (f32.abs (f32.load (i32.add (local.get $xs) (i32.shl (local.get $l) (i32.const 2)))))))
            (local.set $l (i32.add (local.get $l) (i32.const 1)))
            (br $wt)))
        (if (local.get $q5)
          (then (call $qkx2 (local.get $xs) (global.get $W) (i32.const 32) (f32.const 31) (f32.const -0.5) (f64.const 0.1) (i32.const 15)
                  (i32.add (global.get $OUT) (i32.shl (local.get $j) (i32.const 3)))))
          (else (call $qkx2 (local.get $xs) (global.get $W) (i32.const 32) (f32.const 15) (f32.const -1) (f64.const 0.1) (i32.const 20)
                  (i32.add (global.get $OUT) (i32.shl (local.get $j) (i32.const 3))))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $sub))))

  ;; make_qx_quants' sums for one trial iscale over n values at x (levels in [−nmax, nmax − 1]).
  (func $qxSums (param $x i32) (param $n i32) (param $nmax f32) (param $iscale f32)
    (local $i i32) (local $v f32) (local $l f32) (local $w f32)
    (global.set $sumlx (f32.const 0))
    (global.set $suml2 (f32.const 0))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $v (f32.load (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 2)))))
        (local.set $l (call $level (f32.mul (local.get $iscale) (local.get $v)) (f32.neg (local.get $nmax)) (f32.sub (local.get $nmax) (f32.const 1))))
        (local.set $w (f32.mul (local.get $v) (local.get $v)))
        (global.set $sumlx (f32.add (global.get $sumlx) (f32.mul (f32.mul (local.get $w) (local.get $v)) (local.get $l))))
        (global.set $suml2 (f32.add (global.get $suml2) (f32.mul (f32.mul (local.get $w) (local.get $l)) (local.get $l))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each))))

  ;; make_qx_quants (rmse_type 1, no importance weights) of n values at x: the scale.
  (func $qx (param $x i32) (param $n i32) (param $nmax f32) (result f32)
    (local $i i32) (local $is i32) (local $v f32) (local $max f32) (local $amax f32) (local $scale f32) (local $best f32)
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $v (f32.load (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 2)))))
        (if (f32.gt (f32.abs (local.get $v)) (local.get $amax))
          (then
            (local.set $amax (f32.abs (local.get $v)))
            (local.set $max (local.get $v))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (if (f64.lt (f64.promote_f32 (local.get $amax)) (f64.const 1e-15)) (then (return (f32.const 0))))
    (call $qxSums (local.get $x) (local.get $n) (local.get $nmax) (f32.div (f32.neg (local.get $nmax)) (local.get $max)))
    ;; JavaScript `suml2 ? … : 0`: 0 and NaN are false.
    (if (i32.and (f32.ne (global.get $suml2) (f32.const 0)) (f32.eq (global.get $suml2) (global.get $suml2)))
      (then (local.set $scale (f32.div (global.get $sumlx) (global.get $suml2)))))
    (local.set $best (f32.mul (local.get $scale) (global.get $sumlx)))
    (local.set $is (i32.const -9))
    (block $steps
      (loop $step
        (br_if $steps (i32.gt_s (local.get $is) (i32.const 9)))
        (if (local.get $is)
          (then
            (call $qxSums (local.get $x) (local.get $n) (local.get $nmax)
              (f32.div
                (f32.neg (f32.add (local.get $nmax) (f32.demote_f64 (f64.mul (f64.const 0.1) (f64.convert_i32_s (local.get $is))))))
                (local.get $max)))
            (if (i32.and
                  (f32.gt (global.get $suml2) (f32.const 0))
                  (f32.gt (f32.mul (global.get $sumlx) (global.get $sumlx)) (f32.mul (local.get $best) (global.get $suml2))))
              (then
                (local.set $scale (f32.div (global.get $sumlx) (global.get $suml2)))
                (local.set $best (f32.mul (local.get $scale) (global.get $sumlx)))))))
        (local.set $is (i32.add (local.get $is) (i32.const 1)))
        (br $step)))
    (local.get $scale))

  ;; Q6_K sub-block scales of the 256 values at X: scale of sub-block j (16 values) at OUT + 4j.
  (func (export "q6k")
    (local $j i32)
    (block $done
      (loop $sub
        (br_if $done (i32.ge_u (local.get $j) (i32.const 16)))
        (f32.store (i32.add (global.get $OUT) (i32.shl (local.get $j) (i32.const 2)))
          (call $qx (i32.add (global.get $X) (i32.shl (local.get $j) (i32.const 6))) (i32.const 16) (f32.const 32)))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $sub)))))
