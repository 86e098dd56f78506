// Compile-time facts about masks that kernels and the front door need.
#pragma once

#include <type_traits>

#include "attnkit/mask/basic.hpp"
#include "attnkit/mask/compose.hpp"
#include "attnkit/mask/document.hpp"
#include "attnkit/mask/window.hpp"

namespace attnkit {

// "Causal-type": every allowed key satisfies j <= p(i). ReRoPE and Leaky
// ReRoPE clip the relative position p - j from above, which is only meaningful
// when it is never negative. True for causal, sliding window, sink + window,
// and any conjunction with one of them.
template <class M>
struct is_causal_type : std::false_type {};
template <>
struct is_causal_type<CausalMask> : std::true_type {};
template <>
struct is_causal_type<SlidingWindowMask> : std::true_type {};
template <>
struct is_causal_type<SinkWindowMask> : std::true_type {};
template <class A, class B>
struct is_causal_type<AndMask<A, B>> : std::bool_constant<is_causal_type<A>::value || is_causal_type<B>::value> {};
template <class A, class B>
struct is_causal_type<OrMask<A, B>> : std::bool_constant<is_causal_type<A>::value && is_causal_type<B>::value> {};
template <class A>
struct is_causal_type<UntiledMask<A>> : is_causal_type<A> {};

// A document mask's key_span binary-searches its ids; a composition is
// arithmetic only when both parts are.
template <>
struct key_span_is_arithmetic<DocumentMask> : std::false_type {};
template <class A, class B>
struct key_span_is_arithmetic<AndMask<A, B>>
    : std::bool_constant<key_span_is_arithmetic<A>::value && key_span_is_arithmetic<B>::value> {};
template <class A, class B>
struct key_span_is_arithmetic<OrMask<A, B>>
    : std::bool_constant<key_span_is_arithmetic<A>::value && key_span_is_arithmetic<B>::value> {};

}  // namespace attnkit
