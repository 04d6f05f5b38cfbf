// Stark ECDSA verification against a public key given as a curve point.
//
// Accepts exactly what `ecdsa::check_ecdsa_signature(message, key.x, r, s)` accepts: s not 0 or the
// curve order, r not the curve order and the x coordinate of a point R, and
// x(s * R) == x(z * G + r * Q) or x(s * R) == x(z * G - r * Q). It is cheaper because the public
// key's y coordinate comes from the caller (no square root per call) and because, when the caller
// has the signer's sign of y, the check takes 2 EC states and 3 scalar multiplications instead of
// 4 and 3 (or 5 and 3 when the first comparison fails).
use ec::{
    ec_point_from_x_nz, ec_point_try_new_nz, ec_point_unwrap, ec_state_add_mul, ec_state_init,
    ec_state_try_finalize_nz
};
use option::OptionTrait;

// A Stark public key as a curve point; y == 0 marks an x that is not on the curve (the Stark curve
// has no point with y == 0), for which no signature verifies.
#[derive(Copy, Drop, Serde, starknet::Store)]
struct KeyPoint {
    x: felt252,
    y: felt252,
}

// The point of a public key (y == 0 if `x` is not the x coordinate of a curve point).
fn key_point(x: felt252) -> KeyPoint {
    match ec_point_from_x_nz(x) {
        Option::Some(point) => {
            let (_x, y) = ec_point_unwrap(point);
            KeyPoint { x, y }
        },
        Option::None => KeyPoint { x, y: 0 },
    }
}

// Returns (valid, flipped): flipped is true when the signature verified with (x, -y), i.e. the
// signer's public point is (x, -y); callers store the flipped point so that the next check takes the
// short path.
fn verify(message: felt252, key: KeyPoint, r: felt252, s: felt252) -> (bool, bool) {
    if s == 0 {
        return (false, false);
    }
    if s == ec::stark_curve::ORDER {
        return (false, false);
    }
    if r == ec::stark_curve::ORDER {
        return (false, false);
    }
    let q = match ec_point_try_new_nz(key.x, key.y) {
        Option::Some(point) => point,
        Option::None => {
            return (false, false);
        },
    };
    // r must be the x coordinate of a point R (this excludes r == 0).
    let big_r = match ec_point_from_x_nz(r) {
        Option::Some(point) => point,
        Option::None => {
            return (false, false);
        },
    };
    let generator = match ec_point_try_new_nz(ec::stark_curve::GEN_X, ec::stark_curve::GEN_Y) {
        Option::Some(point) => point,
        Option::None => {
            return (false, false);
        },
    };

    let mut state = ec_state_init();
    ec_state_add_mul(ref state, s, big_r);
    let sr_x = match ec_state_try_finalize_nz(state) {
        Option::Some(point) => {
            let (x, _y) = ec_point_unwrap(point);
            x
        },
        Option::None => {
            return (false, false);
        },
    };

    // z * G + r * Q
    let mut state = ec_state_init();
    ec_state_add_mul(ref state, message, generator);
    ec_state_add_mul(ref state, r, q);
    match ec_state_try_finalize_nz(state) {
        Option::Some(point) => {
            let (x, _y) = ec_point_unwrap(point);
            if x == sr_x {
                return (true, false);
            }
        },
        Option::None => {},
    };

    // z * G - r * Q = z * G + r * (x, -y)
    let minus_q = match ec_point_try_new_nz(key.x, -key.y) {
        Option::Some(point) => point,
        Option::None => {
            return (false, false);
        },
    };
    let mut state = ec_state_init();
    ec_state_add_mul(ref state, message, generator);
    ec_state_add_mul(ref state, r, minus_q);
    match ec_state_try_finalize_nz(state) {
        Option::Some(point) => {
            let (x, _y) = ec_point_unwrap(point);
            if x == sr_x {
                return (true, true);
            }
        },
        Option::None => {},
    };
    (false, false)
}
