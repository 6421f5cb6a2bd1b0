//! A sweeper that never sleeps: ticks the plans at each instant something falls due.

use kinema_ledger::{tick_subscriptions, Catalogue, SubscriptionState, Transition, UnixMillis};

/// `state` ticked at each instant something falls due before `until`, then at `until`;
/// the effects of all the ticks, in order.
pub fn swept(state: &SubscriptionState, cat: &Catalogue, until: UnixMillis) -> Transition {
    let mut t = Transition {
        state: state.clone(),
        effects: Vec::new(),
    };
    let mut last = UnixMillis::MIN;
    while let Some(due) = t.state.next_due_at().filter(|d| *d < until) {
        assert!(due > last, "the schedule moves forward");
        last = due;
        let next = tick_subscriptions(&t.state, cat, due);
        t.effects.extend(next.effects);
        t.state = next.state;
    }
    let next = tick_subscriptions(&t.state, cat, until);
    t.effects.extend(next.effects);
    t.state = next.state;
    t
}
