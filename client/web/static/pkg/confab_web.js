/**
 * The confab client of the page. See the crate docs.
 */
export class WebClient {
    static __wrap(ptr) {
        const obj = Object.create(WebClient.prototype);
        obj.__wbg_ptr = ptr;
        WebClientFinalization.register(obj, obj.__wbg_ptr, obj);
        return obj;
    }
    __destroy_into_raw() {
        const ptr = this.__wbg_ptr;
        this.__wbg_ptr = 0;
        WebClientFinalization.unregister(this);
        return ptr;
    }
    free() {
        const ptr = this.__destroy_into_raw();
        wasm.__wbg_webclient_free(ptr, 0);
    }
    /**
     * Accepts a request.
     * @param {number} unix_ms
     * @param {number} mono_ms
     * @param {string} peer
     * @returns {number}
     */
    accept_mp(unix_ms, mono_ms, peer) {
        const val2 = +unix_ms;
        const val3 = +mono_ms;
        const ptr0 = passStringToWasm0(peer, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
        const len0 = WASM_VECTOR_LEN;
        const ret = wasm.webclient_accept_mp(this.__wbg_ptr, val2, val3, ptr0, len0);
        if (ret[2]) {
            throw takeFromExternrefTable0(ret[1]);
        }
        return ret[0] >>> 0;
    }
    /**
     * Pins the new key `user` presented.
     * @param {string} user
     * @returns {boolean}
     */
    accept_new_key(user) {
        const ptr0 = passStringToWasm0(user, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
        const len0 = WASM_VECTOR_LEN;
        const ret = wasm.webclient_accept_new_key(this.__wbg_ptr, ptr0, len0);
        return ret !== 0;
    }
    /**
     * The bytes of the last `take_checkpoint` are stored: held frames may go.
     */
    checkpoint_saved() {
        wasm.webclient_checkpoint_saved(this.__wbg_ptr);
    }
    /**
     * Closes a private conversation.
     * @param {number} unix_ms
     * @param {number} mono_ms
     * @param {string} peer
     * @returns {number}
     */
    close_mp(unix_ms, mono_ms, peer) {
        const val2 = +unix_ms;
        const val3 = +mono_ms;
        const ptr0 = passStringToWasm0(peer, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
        const len0 = WASM_VECTOR_LEN;
        const ret = wasm.webclient_close_mp(this.__wbg_ptr, val2, val3, ptr0, len0);
        if (ret[2]) {
            throw takeFromExternrefTable0(ret[1]);
        }
        return ret[0] >>> 0;
    }
    /**
     * The WebSocket opened.
     * @param {number} unix_ms
     * @param {number} mono_ms
     */
    connected(unix_ms, mono_ms) {
        wasm.webclient_connected(this.__wbg_ptr, unix_ms, mono_ms);
    }
    /**
     * What is known of `user`'s key, JSON text.
     * @param {string} user
     * @returns {string}
     */
    contact(user) {
        let deferred2_0;
        let deferred2_1;
        try {
            const ptr0 = passStringToWasm0(user, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            const len0 = WASM_VECTOR_LEN;
            const ret = wasm.webclient_contact(this.__wbg_ptr, ptr0, len0);
            deferred2_0 = ret[0];
            deferred2_1 = ret[1];
            return getStringFromWasm0(ret[0], ret[1]);
        } finally {
            wasm.__wbindgen_free(deferred2_0, deferred2_1, 1);
        }
    }
    /**
     * The peers of the conversations with keys, JSON text (an array of names).
     * @returns {string}
     */
    conversations() {
        let deferred1_0;
        let deferred1_1;
        try {
            const ret = wasm.webclient_conversations(this.__wbg_ptr);
            deferred1_0 = ret[0];
            deferred1_1 = ret[1];
            return getStringFromWasm0(ret[0], ret[1]);
        } finally {
            wasm.__wbindgen_free(deferred1_0, deferred1_1, 1);
        }
    }
    /**
     * Creates a room.
     * @param {number} unix_ms
     * @param {number} mono_ms
     * @param {string} room
     * @param {string} password
     * @returns {number}
     */
    create_room(unix_ms, mono_ms, room, password) {
        const val3 = +unix_ms;
        const val4 = +mono_ms;
        let ptr0, len0, ptr1, len1;
        try {
            ptr0 = passStringToWasm0(room, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            len0 = WASM_VECTOR_LEN;
            ptr1 = passStringToWasm0(password, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            len1 = WASM_VECTOR_LEN;
        } catch (e) {
            if (ptr1) { wasm.__wbindgen_free(ptr1, len1 * 1, 1); }
            if (ptr0) { wasm.__wbindgen_free(ptr0, len0 * 1, 1); }
            throw e;
        }
        const ret = wasm.webclient_create_room(this.__wbg_ptr, val3, val4, ptr0, len0, ptr1, len1);
        if (ret[2]) {
            throw takeFromExternrefTable0(ret[1]);
        }
        return ret[0] >>> 0;
    }
    /**
     * The WebSocket closed.
     * @param {number} unix_ms
     * @param {number} mono_ms
     */
    disconnected(unix_ms, mono_ms) {
        wasm.webclient_disconnected(this.__wbg_ptr, unix_ms, mono_ms);
    }
    /**
     * Fetches (and pins or checks) a user's key.
     * @param {number} unix_ms
     * @param {number} mono_ms
     * @param {string} user
     * @returns {number}
     */
    fetch_key(unix_ms, mono_ms, user) {
        const val2 = +unix_ms;
        const val3 = +mono_ms;
        const ptr0 = passStringToWasm0(user, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
        const len0 = WASM_VECTOR_LEN;
        const ret = wasm.webclient_fetch_key(this.__wbg_ptr, val2, val3, ptr0, len0);
        if (ret[2]) {
            throw takeFromExternrefTable0(ret[1]);
        }
        return ret[0] >>> 0;
    }
    /**
     * This user's key fingerprint.
     * @returns {string}
     */
    fingerprint() {
        let deferred1_0;
        let deferred1_1;
        try {
            const ret = wasm.webclient_fingerprint(this.__wbg_ptr);
            deferred1_0 = ret[0];
            deferred1_1 = ret[1];
            return getStringFromWasm0(ret[0], ret[1]);
        } finally {
            wasm.__wbindgen_free(deferred1_0, deferred1_1, 1);
        }
    }
    /**
     * A binary WebSocket message arrived.
     * @param {number} unix_ms
     * @param {number} mono_ms
     * @param {Uint8Array | number[]} bytes
     */
    handle_input(unix_ms, mono_ms, bytes) {
        const val2 = +unix_ms;
        const val3 = +mono_ms;
        const ptr0 = passArray8ToWasm0(bytes, wasm.__wbindgen_malloc);
        const len0 = WASM_VECTOR_LEN;
        wasm.webclient_handle_input(this.__wbg_ptr, val2, val3, ptr0, len0);
    }
    /**
     * The time `poll_timeout` gave passed.
     * @param {number} unix_ms
     * @param {number} mono_ms
     */
    handle_timeout(unix_ms, mono_ms) {
        wasm.webclient_handle_timeout(this.__wbg_ptr, unix_ms, mono_ms);
    }
    /**
     * Whether the conversation with `peer` has its keys.
     * @param {string} peer
     * @returns {boolean}
     */
    has_session(peer) {
        const ptr0 = passStringToWasm0(peer, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
        const len0 = WASM_VECTOR_LEN;
        const ret = wasm.webclient_has_session(this.__wbg_ptr, ptr0, len0);
        return ret !== 0;
    }
    /**
     * The readable received private messages, JSON text.
     * @returns {string}
     */
    inbox() {
        let deferred1_0;
        let deferred1_1;
        try {
            const ret = wasm.webclient_inbox(this.__wbg_ptr);
            deferred1_0 = ret[0];
            deferred1_1 = ret[1];
            return getStringFromWasm0(ret[0], ret[1]);
        } finally {
            wasm.__wbindgen_free(deferred1_0, deferred1_1, 1);
        }
    }
    /**
     * Whether a session is held.
     * @returns {boolean}
     */
    is_logged_in() {
        const ret = wasm.webclient_is_logged_in(this.__wbg_ptr);
        return ret !== 0;
    }
    /**
     * Joins a room.
     * @param {number} unix_ms
     * @param {number} mono_ms
     * @param {string} room
     * @param {string} password
     * @returns {number}
     */
    join_room(unix_ms, mono_ms, room, password) {
        const val3 = +unix_ms;
        const val4 = +mono_ms;
        let ptr0, len0, ptr1, len1;
        try {
            ptr0 = passStringToWasm0(room, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            len0 = WASM_VECTOR_LEN;
            ptr1 = passStringToWasm0(password, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            len1 = WASM_VECTOR_LEN;
        } catch (e) {
            if (ptr1) { wasm.__wbindgen_free(ptr1, len1 * 1, 1); }
            if (ptr0) { wasm.__wbindgen_free(ptr0, len0 * 1, 1); }
            throw e;
        }
        const ret = wasm.webclient_join_room(this.__wbg_ptr, val3, val4, ptr0, len0, ptr1, len1);
        if (ret[2]) {
            throw takeFromExternrefTable0(ret[1]);
        }
        return ret[0] >>> 0;
    }
    /**
     * The two-step login (password, then passphrase).
     * @param {number} unix_ms
     * @param {number} mono_ms
     * @param {string} user
     * @param {string} password
     * @param {string} passphrase
     * @returns {number}
     */
    login(unix_ms, mono_ms, user, password, passphrase) {
        const val4 = +unix_ms;
        const val5 = +mono_ms;
        let ptr0, len0, ptr1, len1, ptr2, len2;
        try {
            ptr0 = passStringToWasm0(user, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            len0 = WASM_VECTOR_LEN;
            ptr1 = passStringToWasm0(password, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            len1 = WASM_VECTOR_LEN;
            ptr2 = passStringToWasm0(passphrase, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            len2 = WASM_VECTOR_LEN;
        } catch (e) {
            if (ptr2) { wasm.__wbindgen_free(ptr2, len2 * 1, 1); }
            if (ptr1) { wasm.__wbindgen_free(ptr1, len1 * 1, 1); }
            if (ptr0) { wasm.__wbindgen_free(ptr0, len0 * 1, 1); }
            throw e;
        }
        const ret = wasm.webclient_login(this.__wbg_ptr, val4, val5, ptr0, len0, ptr1, len1, ptr2, len2);
        if (ret[2]) {
            throw takeFromExternrefTable0(ret[1]);
        }
        return ret[0] >>> 0;
    }
    /**
     * Revokes the session.
     * @param {number} unix_ms
     * @param {number} mono_ms
     * @returns {number}
     */
    logout(unix_ms, mono_ms) {
        const ret = wasm.webclient_logout(this.__wbg_ptr, unix_ms, mono_ms);
        if (ret[2]) {
            throw takeFromExternrefTable0(ret[1]);
        }
        return ret[0] >>> 0;
    }
    /**
     * The key record to keep after a logout (the identity key encrypted
     * under the password), or `undefined` if there is none to keep.
     * @returns {Uint8Array | undefined}
     */
    logout_record() {
        const ret = wasm.webclient_logout_record(this.__wbg_ptr);
        let v1;
        if (ret[0] !== 0) {
            v1 = getArrayU8FromWasm0(ret[0], ret[1]).slice();
            wasm.__wbindgen_free(ret[0], ret[1] * 1, 1);
        }
        return v1;
    }
    /**
     * A client for a new user, with a fresh identity key.
     * @param {Uint8Array | number[]} seed_bytes
     * @param {number} unix_ms
     * @param {number} mono_ms
     */
    constructor(seed_bytes, unix_ms, mono_ms) {
        const val2 = +unix_ms;
        const val3 = +mono_ms;
        const ptr0 = passArray8ToWasm0(seed_bytes, wasm.__wbindgen_malloc);
        const len0 = WASM_VECTOR_LEN;
        const ret = wasm.webclient_new(ptr0, len0, val2, val3);
        if (ret[2]) {
            throw takeFromExternrefTable0(ret[1]);
        }
        this.__wbg_ptr = ret[0];
        WebClientFinalization.register(this, this.__wbg_ptr, this);
        return this;
    }
    /**
     * Why a login as `user` is refused where no key for it is held.
     * @param {string} user
     * @returns {string}
     */
    static no_identity(user) {
        let deferred2_0;
        let deferred2_1;
        try {
            const ptr0 = passStringToWasm0(user, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            const len0 = WASM_VECTOR_LEN;
            const ret = wasm.webclient_no_identity(ptr0, len0);
            deferred2_0 = ret[0];
            deferred2_1 = ret[1];
            return getStringFromWasm0(ret[0], ret[1]);
        } finally {
            wasm.__wbindgen_free(deferred2_0, deferred2_1, 1);
        }
    }
    /**
     * The account this client's identity key belongs to (registered here
     * or unlocked), or `undefined`.
     * @returns {string | undefined}
     */
    owner() {
        const ret = wasm.webclient_owner(this.__wbg_ptr);
        let v1;
        if (ret[0] !== 0) {
            v1 = getStringFromWasm0(ret[0], ret[1]);
            wasm.__wbindgen_free(ret[0], ret[1] * 1, 1);
        }
        return v1;
    }
    /**
     * The next event as JSON text, or `undefined`.
     * @returns {string | undefined}
     */
    poll_event() {
        const ret = wasm.webclient_poll_event(this.__wbg_ptr);
        let v1;
        if (ret[0] !== 0) {
            v1 = getStringFromWasm0(ret[0], ret[1]);
            wasm.__wbindgen_free(ret[0], ret[1] * 1, 1);
        }
        return v1;
    }
    /**
     * When (on the `performance.now()` scale, ms) to call `handle_timeout`, or `undefined`.
     * @returns {number | undefined}
     */
    poll_timeout() {
        const ret = wasm.webclient_poll_timeout(this.__wbg_ptr);
        return ret[0] === 0 ? undefined : ret[1];
    }
    /**
     * Bytes to send as one binary message, or `undefined`.
     * @returns {Uint8Array | undefined}
     */
    poll_transmit() {
        const ret = wasm.webclient_poll_transmit(this.__wbg_ptr);
        let v1;
        if (ret[0] !== 0) {
            v1 = getArrayU8FromWasm0(ret[0], ret[1]).slice();
            wasm.__wbindgen_free(ret[0], ret[1] * 1, 1);
        }
        return v1;
    }
    /**
     * The account of a key record (what a logout left), or `undefined`
     * if the bytes are not one.
     * @param {Uint8Array | number[]} bytes
     * @returns {string | undefined}
     */
    static record_owner(bytes) {
        const ptr0 = passArray8ToWasm0(bytes, wasm.__wbindgen_malloc);
        const len0 = WASM_VECTOR_LEN;
        const ret = wasm.webclient_record_owner(ptr0, len0);
        let v2;
        if (ret[0] !== 0) {
            v2 = getStringFromWasm0(ret[0], ret[1]);
            wasm.__wbindgen_free(ret[0], ret[1] * 1, 1);
        }
        return v2;
    }
    /**
     * Registers `user` (then log in).
     * @param {number} unix_ms
     * @param {number} mono_ms
     * @param {string} user
     * @param {string} password
     * @param {string} passphrase
     * @returns {number}
     */
    register(unix_ms, mono_ms, user, password, passphrase) {
        const val4 = +unix_ms;
        const val5 = +mono_ms;
        let ptr0, len0, ptr1, len1, ptr2, len2;
        try {
            ptr0 = passStringToWasm0(user, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            len0 = WASM_VECTOR_LEN;
            ptr1 = passStringToWasm0(password, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            len1 = WASM_VECTOR_LEN;
            ptr2 = passStringToWasm0(passphrase, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            len2 = WASM_VECTOR_LEN;
        } catch (e) {
            if (ptr2) { wasm.__wbindgen_free(ptr2, len2 * 1, 1); }
            if (ptr1) { wasm.__wbindgen_free(ptr1, len1 * 1, 1); }
            if (ptr0) { wasm.__wbindgen_free(ptr0, len0 * 1, 1); }
            throw e;
        }
        const ret = wasm.webclient_register(this.__wbg_ptr, val4, val5, ptr0, len0, ptr1, len1, ptr2, len2);
        if (ret[2]) {
            throw takeFromExternrefTable0(ret[1]);
        }
        return ret[0] >>> 0;
    }
    /**
     * Requests a private conversation.
     * @param {number} unix_ms
     * @param {number} mono_ms
     * @param {string} peer
     * @returns {number}
     */
    request_mp(unix_ms, mono_ms, peer) {
        const val2 = +unix_ms;
        const val3 = +mono_ms;
        const ptr0 = passStringToWasm0(peer, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
        const len0 = WASM_VECTOR_LEN;
        const ret = wasm.webclient_request_mp(this.__wbg_ptr, val2, val3, ptr0, len0);
        if (ret[2]) {
            throw takeFromExternrefTable0(ret[1]);
        }
        return ret[0] >>> 0;
    }
    /**
     * The client stored in `profile` (bytes `take_checkpoint` handed out).
     * @param {Uint8Array | number[]} seed_bytes
     * @param {Uint8Array | number[]} profile
     * @param {number} unix_ms
     * @param {number} mono_ms
     * @returns {WebClient}
     */
    static restore(seed_bytes, profile, unix_ms, mono_ms) {
        const val3 = +unix_ms;
        const val4 = +mono_ms;
        let ptr0, len0, ptr1, len1;
        try {
            ptr0 = passArray8ToWasm0(seed_bytes, wasm.__wbindgen_malloc);
            len0 = WASM_VECTOR_LEN;
            ptr1 = passArray8ToWasm0(profile, wasm.__wbindgen_malloc);
            len1 = WASM_VECTOR_LEN;
        } catch (e) {
            if (ptr1) { wasm.__wbindgen_free(ptr1, len1 * 1, 1); }
            if (ptr0) { wasm.__wbindgen_free(ptr0, len0 * 1, 1); }
            throw e;
        }
        const ret = wasm.webclient_restore(ptr0, len0, ptr1, len1, val3, val4);
        if (ret[2]) {
            throw takeFromExternrefTable0(ret[1]);
        }
        return WebClient.__wrap(ret[0]);
    }
    /**
     * Asks for a room's history.
     * @param {number} unix_ms
     * @param {number} mono_ms
     * @param {string} room
     * @returns {number}
     */
    room_history(unix_ms, mono_ms, room) {
        const val2 = +unix_ms;
        const val3 = +mono_ms;
        const ptr0 = passStringToWasm0(room, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
        const len0 = WASM_VECTOR_LEN;
        const ret = wasm.webclient_room_history(this.__wbg_ptr, val2, val3, ptr0, len0);
        if (ret[2]) {
            throw takeFromExternrefTable0(ret[1]);
        }
        return ret[0] >>> 0;
    }
    /**
     * The rooms this device holds keys for, JSON text (an array of names).
     * @returns {string}
     */
    rooms() {
        let deferred1_0;
        let deferred1_1;
        try {
            const ret = wasm.webclient_rooms(this.__wbg_ptr);
            deferred1_0 = ret[0];
            deferred1_1 = ret[1];
            return getStringFromWasm0(ret[0], ret[1]);
        } finally {
            wasm.__wbindgen_free(deferred1_0, deferred1_1, 1);
        }
    }
    /**
     * The safety number with `user`, or `undefined`.
     * @param {string} user
     * @returns {string | undefined}
     */
    safety_number(user) {
        const ptr0 = passStringToWasm0(user, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
        const len0 = WASM_VECTOR_LEN;
        const ret = wasm.webclient_safety_number(this.__wbg_ptr, ptr0, len0);
        let v2;
        if (ret[0] !== 0) {
            v2 = getStringFromWasm0(ret[0], ret[1]);
            wasm.__wbindgen_free(ret[0], ret[1] * 1, 1);
        }
        return v2;
    }
    /**
     * Sends a private message.
     * @param {number} unix_ms
     * @param {number} mono_ms
     * @param {string} peer
     * @param {string} text
     * @returns {number}
     */
    send_mp(unix_ms, mono_ms, peer, text) {
        const val3 = +unix_ms;
        const val4 = +mono_ms;
        let ptr0, len0, ptr1, len1;
        try {
            ptr0 = passStringToWasm0(peer, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            len0 = WASM_VECTOR_LEN;
            ptr1 = passStringToWasm0(text, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            len1 = WASM_VECTOR_LEN;
        } catch (e) {
            if (ptr1) { wasm.__wbindgen_free(ptr1, len1 * 1, 1); }
            if (ptr0) { wasm.__wbindgen_free(ptr0, len0 * 1, 1); }
            throw e;
        }
        const ret = wasm.webclient_send_mp(this.__wbg_ptr, val3, val4, ptr0, len0, ptr1, len1);
        if (ret[2]) {
            throw takeFromExternrefTable0(ret[1]);
        }
        return ret[0] >>> 0;
    }
    /**
     * Sends to a room.
     * @param {number} unix_ms
     * @param {number} mono_ms
     * @param {string} room
     * @param {string} text
     * @returns {number}
     */
    send_room(unix_ms, mono_ms, room, text) {
        const val3 = +unix_ms;
        const val4 = +mono_ms;
        let ptr0, len0, ptr1, len1;
        try {
            ptr0 = passStringToWasm0(room, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            len0 = WASM_VECTOR_LEN;
            ptr1 = passStringToWasm0(text, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            len1 = WASM_VECTOR_LEN;
        } catch (e) {
            if (ptr1) { wasm.__wbindgen_free(ptr1, len1 * 1, 1); }
            if (ptr0) { wasm.__wbindgen_free(ptr0, len0 * 1, 1); }
            throw e;
        }
        const ret = wasm.webclient_send_room(this.__wbg_ptr, val3, val4, ptr0, len0, ptr1, len1);
        if (ret[2]) {
            throw takeFromExternrefTable0(ret[1]);
        }
        return ret[0] >>> 0;
    }
    /**
     * This user's own private messages to `peer` of the last hour (before
     * `unix_ms`'s hour ends), JSON text: `[{"text", "sent_ms", "expires_ms"}]`.
     * @param {string} peer
     * @param {number} unix_ms
     * @returns {string}
     */
    sent_mps(peer, unix_ms) {
        let deferred3_0;
        let deferred3_1;
        try {
            const val2 = +unix_ms;
            const ptr0 = passStringToWasm0(peer, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            const len0 = WASM_VECTOR_LEN;
            const ret = wasm.webclient_sent_mps(this.__wbg_ptr, ptr0, len0, val2);
            deferred3_0 = ret[0];
            deferred3_1 = ret[1];
            return getStringFromWasm0(ret[0], ret[1]);
        } finally {
            wasm.__wbindgen_free(deferred3_0, deferred3_1, 1);
        }
    }
    /**
     * Profile bytes to encrypt and store, or `undefined`; then call `checkpoint_saved`.
     * @returns {Uint8Array | undefined}
     */
    take_checkpoint() {
        const ret = wasm.webclient_take_checkpoint(this.__wbg_ptr);
        let v1;
        if (ret[0] !== 0) {
            v1 = getArrayU8FromWasm0(ret[0], ret[1]).slice();
            wasm.__wbindgen_free(ret[0], ret[1] * 1, 1);
        }
        return v1;
    }
    /**
     * A client for the account of a key record, its identity key decrypted
     * with `password` (throws on a wrong one); then `login` as that account.
     * @param {Uint8Array | number[]} seed_bytes
     * @param {Uint8Array | number[]} record
     * @param {string} password
     * @param {number} unix_ms
     * @param {number} mono_ms
     * @returns {WebClient}
     */
    static unlock(seed_bytes, record, password, unix_ms, mono_ms) {
        const val4 = +unix_ms;
        const val5 = +mono_ms;
        let ptr0, len0, ptr1, len1, ptr2, len2;
        try {
            ptr0 = passArray8ToWasm0(seed_bytes, wasm.__wbindgen_malloc);
            len0 = WASM_VECTOR_LEN;
            ptr1 = passArray8ToWasm0(record, wasm.__wbindgen_malloc);
            len1 = WASM_VECTOR_LEN;
            ptr2 = passStringToWasm0(password, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
            len2 = WASM_VECTOR_LEN;
        } catch (e) {
            if (ptr2) { wasm.__wbindgen_free(ptr2, len2 * 1, 1); }
            if (ptr1) { wasm.__wbindgen_free(ptr1, len1 * 1, 1); }
            if (ptr0) { wasm.__wbindgen_free(ptr0, len0 * 1, 1); }
            throw e;
        }
        const ret = wasm.webclient_unlock(ptr0, len0, ptr1, len1, ptr2, len2, val4, val5);
        if (ret[2]) {
            throw takeFromExternrefTable0(ret[1]);
        }
        return WebClient.__wrap(ret[0]);
    }
    /**
     * The logged-in user, or `undefined`.
     * @returns {string | undefined}
     */
    username() {
        const ret = wasm.webclient_username(this.__wbg_ptr);
        let v1;
        if (ret[0] !== 0) {
            v1 = getStringFromWasm0(ret[0], ret[1]);
            wasm.__wbindgen_free(ret[0], ret[1] * 1, 1);
        }
        return v1;
    }
    /**
     * Marks `user`'s pinned key verified.
     * @param {string} user
     */
    verify(user) {
        const ptr0 = passStringToWasm0(user, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
        const len0 = WASM_VECTOR_LEN;
        const ret = wasm.webclient_verify(this.__wbg_ptr, ptr0, len0);
        if (ret[1]) {
            throw takeFromExternrefTable0(ret[0]);
        }
    }
}
if (Symbol.dispose) WebClient.prototype[Symbol.dispose] = WebClient.prototype.free;
function __wbg_get_imports() {
    const import0 = {
        __proto__: null,
        __wbg_Error_208446807d0d1e30: function(arg0, arg1) {
            const ret = Error(getStringFromWasm0(arg0, arg1));
            return ret;
        },
        __wbg___wbindgen_throw_4c88d8bf264fd984: function(arg0, arg1) {
            throw new Error(getStringFromWasm0(arg0, arg1));
        },
        __wbindgen_init_externref_table: function() {
            const table = wasm.__wbindgen_externrefs;
            table.set(0, undefined);
            table.set(1024, undefined);
            table.set(1025, null);
            table.set(1026, true);
            table.set(1027, false);
        },
    };
    return {
        __proto__: null,
        "./confab_web_bg.js": import0,
    };
}

const WebClientFinalization = (typeof FinalizationRegistry === 'undefined')
    ? { register: () => {}, unregister: () => {} }
    : new FinalizationRegistry(ptr => wasm.__wbg_webclient_free(ptr, 1));

function getArrayU8FromWasm0(ptr, len) {
    ptr = ptr >>> 0;
    return getUint8ArrayMemory0().subarray(ptr / 1, ptr / 1 + len);
}

function getStringFromWasm0(ptr, len) {
    ptr = ptr >>> 0;
    return decodeText(getUint8ArrayMemory0().subarray(ptr, ptr + len));
}

let cachedUint8ArrayMemory0 = null;
function getUint8ArrayMemory0() {
    if (cachedUint8ArrayMemory0 === null || cachedUint8ArrayMemory0.byteLength === 0) {
        cachedUint8ArrayMemory0 = new Uint8Array(wasm.memory.buffer);
    }
    return cachedUint8ArrayMemory0;
}

function passArray8ToWasm0(arg, malloc) {
    const ptr = malloc(arg.length * 1, 1) >>> 0;
    getUint8ArrayMemory0().set(arg, ptr / 1);
    WASM_VECTOR_LEN = arg.length;
    return ptr;
}

function passStringToWasm0(arg, malloc, realloc) {
    if (realloc === undefined) {
        const buf = cachedTextEncoder.encode(arg);
        const ptr = malloc(buf.length, 1) >>> 0;
        getUint8ArrayMemory0().subarray(ptr, ptr + buf.length).set(buf);
        WASM_VECTOR_LEN = buf.length;
        return ptr;
    }

    let len = arg.length;
    let ptr = malloc(len, 1) >>> 0;

    const mem = getUint8ArrayMemory0();

    let offset = 0;

    for (; offset < len; offset++) {
        const code = arg.charCodeAt(offset);
        if (code > 0x7F) break;
        mem[ptr + offset] = code;
    }
    if (offset !== len) {
        if (offset !== 0) {
            arg = arg.slice(offset);
        }
        ptr = realloc(ptr, len, len = offset + arg.length * 3, 1) >>> 0;
        const view = getUint8ArrayMemory0().subarray(ptr + offset, ptr + len);
        const ret = cachedTextEncoder.encodeInto(arg, view);

        offset += ret.written;
        ptr = realloc(ptr, len, offset, 1) >>> 0;
    }

    WASM_VECTOR_LEN = offset;
    return ptr;
}

function takeFromExternrefTable0(idx) {
    const value = wasm.__wbindgen_externrefs.get(idx);
    wasm.__externref_table_dealloc(idx);
    return value;
}

let cachedTextDecoder = new TextDecoder('utf-8', { ignoreBOM: true });
cachedTextDecoder.decode();
const MAX_SAFARI_DECODE_BYTES = 2146435072;
let numBytesDecoded = 0;
function decodeText(bytes) {
    numBytesDecoded += bytes.length;
    if (numBytesDecoded >= MAX_SAFARI_DECODE_BYTES) {
        cachedTextDecoder = new TextDecoder('utf-8', { ignoreBOM: true });
        cachedTextDecoder.decode();
        numBytesDecoded = bytes.length;
    }
    return cachedTextDecoder.decode(bytes);
}

const cachedTextEncoder = new TextEncoder();

if (!('encodeInto' in cachedTextEncoder)) {
    cachedTextEncoder.encodeInto = function (arg, view) {
        const buf = cachedTextEncoder.encode(arg);
        view.set(buf);
        return {
            read: arg.length,
            written: buf.length
        };
    };
}

let WASM_VECTOR_LEN = 0;

let wasmModule, wasmInstance, wasm;
function __wbg_finalize_init(instance, module) {
    wasmInstance = instance;
    wasm = instance.exports;
    wasmModule = module;
    cachedUint8ArrayMemory0 = null;
    wasm.__wbindgen_start();
    return wasm;
}

async function __wbg_load(module, imports) {
    if (typeof Response === 'function' && module instanceof Response) {
        if (!module.ok) {
            throw new Error(`failed to fetch Wasm: ${module.status} ${module.statusText} fetching '${module.url}'`);
        }

        if (typeof WebAssembly.instantiateStreaming === 'function') {
            try {
                return await WebAssembly.instantiateStreaming(module, imports);
            } catch (e) {
                const validResponse = expectedResponseType(module.type);

                if (validResponse && module.headers.get('Content-Type') !== 'application/wasm') {
                    console.warn("`WebAssembly.instantiateStreaming` failed because your server does not serve Wasm with `application/wasm` MIME type. Falling back to `WebAssembly.instantiate` which is slower. Original error:\n", e);

                } else { throw e; }
            }
        }

        const bytes = await module.arrayBuffer();
        return await WebAssembly.instantiate(bytes, imports);
    } else {
        const instance = await WebAssembly.instantiate(module, imports);

        if (instance instanceof WebAssembly.Instance) {
            return { instance, module };
        } else {
            return instance;
        }
    }

    function expectedResponseType(type) {
        switch (type) {
            case 'basic': case 'cors': case 'default': return true;
        }
        return false;
    }
}

function initSync(module) {
    if (wasm !== undefined) return wasm;


    if (module !== undefined) {
        if (Object.getPrototypeOf(module) === Object.prototype) {
            ({module} = module)
        } else {
            console.warn('using deprecated parameters for `initSync()`; pass a single object instead')
        }
    }

    const imports = __wbg_get_imports();
    if (!(module instanceof WebAssembly.Module)) {
        module = new WebAssembly.Module(module);
    }
    const instance = new WebAssembly.Instance(module, imports);
    return __wbg_finalize_init(instance, module);
}

let __wbg_init_promise;
async function __wbg_init(module_or_path) {
    if (wasm !== undefined) return wasm;
    if (__wbg_init_promise === undefined) {
        __wbg_init_promise = __wbg_init_once(module_or_path);
        __wbg_init_promise.catch(() => { __wbg_init_promise = undefined; });
    }
    return __wbg_init_promise;
}

async function __wbg_init_once(module_or_path) {

    if (module_or_path !== undefined) {
        if (Object.getPrototypeOf(module_or_path) === Object.prototype) {
            ({module_or_path} = module_or_path)
        } else {
            console.warn('using deprecated parameters for the initialization function; pass a single object instead')
        }
    }

    if (module_or_path === undefined) {
        module_or_path = new URL('confab_web_bg.wasm', import.meta.url);
    }
    const imports = __wbg_get_imports();

    if (typeof module_or_path === 'string' || (typeof Request === 'function' && module_or_path instanceof Request) || (typeof URL === 'function' && module_or_path instanceof URL)) {
        module_or_path = fetch(module_or_path);
    }

    const { instance, module } = await __wbg_load(await module_or_path, imports);

    return __wbg_finalize_init(instance, module);
}

export { initSync, __wbg_init as default };
